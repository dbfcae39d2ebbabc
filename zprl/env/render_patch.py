"""Our fixes to robosuite 1.4.1 offscreen rendering (see patches/README.md for the why).

(a) EGL device selection: one rule, ``select_egl_devices(environ, egl_cuda, requested, render_device)``,
    a pure function of the environment, the training device and what EGL reports, replaces robosuite's
    mix of CUDA ids and egl_probe ids. EGL devices are matched to CUDA devices by asking EGL
    (``EGL_CUDA_DEVICE_NV``), by index only where EGL cannot say; the choice is logged once per process.
(b) Fast offscreen rendering: the offscreen buffer starts at the largest image the env asks for
    (robosuite grows it on demand) instead of MuJoCo's 640x480, without multisampling and without
    the reflection pass, and with a 1x1 shadow map when no light casts a shadow. On software GL
    (Mesa llvmpipe) this is about 3x faster per camera image.

``apply_render_patches()`` is idempotent and is called by ``zprl.env.robomimic_env.create_env``.
The fast path is read at GL-context creation, so it can be switched per env in one process:
``ZPRL_FAST_RENDER=0`` (or ``apply_render_patches(fast=False)``) restores robosuite's rendering.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from zprl.common.errors import UserInputError

FAST_RENDER_VAR = "ZPRL_FAST_RENDER"
_OFF_VALUES = ("0", "false", "no", "off")

# Process-wide switches read when a render context is created.
_state = {"patched": False, "fast": None, "buffer_size": (1, 1), "render_device": None, "noted": set()}
EGL_CUDA_DEVICE_NV = 0x323A   # EGL_NV_device_cuda: the CUDA device number of an EGL device
EGL_EXTENSIONS = 0x3055
log = logging.getLogger(__name__)


def _int_list(value: str) -> list[int] | None:
    """CUDA_VISIBLE_DEVICES as integers, or None when it holds UUIDs / MIG names we cannot map."""
    parts = [p.strip() for p in value.split(",") if p.strip()]
    if not all(p.lstrip("-").isdigit() for p in parts):
        return None
    ids = [int(p) for p in parts]
    # CUDA stops at the first invalid (negative) id: "-1" or "" means no GPU visible.
    valid = []
    for i in ids:
        if i < 0:
            break
        valid.append(i)
    return valid


def cuda_ordinal(device) -> int | None:
    """The N of a torch device ``cuda:N`` (``cuda`` alone: 0); None for cpu, None or anything else."""
    if device is None:
        return None
    if isinstance(device, int):
        return device
    text = str(device).strip().lower()
    if text == "cuda":
        return 0
    if text.startswith("cuda:") and text[5:].isdigit():
        return int(text[5:])
    return None


@dataclass(frozen=True)
class RenderTarget:
    """The GPU a process should render on.

    ordinal: its CUDA device number in this process (``cuda:N``; CUDA_VISIBLE_DEVICES already
      applied), which is what EGL's ``EGL_CUDA_DEVICE_NV`` reports; None when CUDA sees no GPU.
    gpu: its id in CUDA_VISIBLE_DEVICES' numbering (nvidia-smi's), used only for the fallback
      "EGL index = GPU id"; None when CUDA_VISIBLE_DEVICES names GPUs by UUID.
    source: the setting that named it, for the log line and errors.
    """

    ordinal: int | None
    gpu: int | None
    source: str

    def describe(self) -> str:
        parts = [f"cuda:{self.ordinal}" if self.ordinal is not None else None,
                 f"GPU {self.gpu}" if self.gpu is not None else None]
        return " = ".join(p for p in parts if p) + f" (from {self.source})"


def render_target(environ: Mapping[str, str], render_device=None) -> RenderTarget | None:
    """Which GPU this process renders on, from the environment and the training device; None: any.

    In order: ``MUJOCO_EGL_DEVICE_ID`` (a GPU id in CUDA_VISIBLE_DEVICES' numbering, as robosuite
    reads it: it must be one of the listed ids), then ``render_device`` (the torch device the
    policy runs on, e.g. ``cuda:1``), then the first GPU of CUDA_VISIBLE_DEVICES (``cuda:0``).
    Raises UserInputError for a GPU that is not there.
    """
    cvd_text = environ.get("CUDA_VISIBLE_DEVICES")
    cvd = None if cvd_text is None else _int_list(cvd_text)  # None: unset or UUIDs
    uuids = cvd_text is not None and cvd is None
    chosen = (environ.get("MUJOCO_EGL_DEVICE_ID") or "").strip()
    if chosen:
        if not chosen.isdigit():
            raise UserInputError(f"MUJOCO_EGL_DEVICE_ID={chosen!r} is not a GPU id; set an integer id of "
                                 "the GPU to render on (one of CUDA_VISIBLE_DEVICES when that is set)")
        gpu = int(chosen)
        if uuids:
            raise UserInputError(f"MUJOCO_EGL_DEVICE_ID={gpu} cannot be matched to CUDA_VISIBLE_DEVICES={cvd_text}, "
                                 "which names GPUs by UUID; list integer ids there or unset MUJOCO_EGL_DEVICE_ID")
        if cvd_text is None:
            return RenderTarget(gpu, gpu, "MUJOCO_EGL_DEVICE_ID")
        if not cvd:  # "" or "-1": CUDA sees no GPU, EGL still does
            return RenderTarget(None, gpu, "MUJOCO_EGL_DEVICE_ID")
        if gpu not in cvd:
            raise UserInputError(f"MUJOCO_EGL_DEVICE_ID={gpu} is not in CUDA_VISIBLE_DEVICES={cvd_text}; "
                                 "pick one of the visible GPUs")
        return RenderTarget(cvd.index(gpu), gpu, "MUJOCO_EGL_DEVICE_ID")
    ordinal = cuda_ordinal(render_device)
    if ordinal is not None:
        if cvd_text is None:
            return RenderTarget(ordinal, ordinal, f"the policy device {render_device}")
        if uuids:
            return RenderTarget(ordinal, None, f"the policy device {render_device}")
        if ordinal >= len(cvd):
            raise UserInputError(f"device {render_device} does not exist: CUDA_VISIBLE_DEVICES={cvd_text} makes "
                                 f"{len(cvd)} GPU(s) visible (cuda:0..cuda:{len(cvd) - 1})" if cvd else
                                 f"device {render_device} does not exist: CUDA_VISIBLE_DEVICES={cvd_text!r} hides every GPU")
        return RenderTarget(ordinal, cvd[ordinal], f"the policy device {render_device}")
    if uuids:
        return RenderTarget(0, None, "CUDA_VISIBLE_DEVICES")
    if cvd:
        return RenderTarget(0, cvd[0], "CUDA_VISIBLE_DEVICES")
    return None


@dataclass(frozen=True)
class EGLChoice:
    devices: list[int]     # EGL device indices to try, in order
    note: str | None       # how they were chosen (logged once per process); None: no GPU was asked for


def select_egl_devices(environ: Mapping[str, str], egl_cuda: Sequence[int | None], requested: int = -1,
                       render_device=None) -> EGLChoice:
    """EGL devices to try, in order, for this process; a pure function, so it is tested without a GPU.

    egl_cuda: one entry per EGL device (``eglQueryDevicesEXT``'s order): the CUDA device number
      that EGL reports for it through ``EGL_NV_device_cuda`` (``EGL_CUDA_DEVICE_NV``), or None where
      EGL cannot say (Mesa, a driver without the extension, a GPU hidden from CUDA).
    requested: robosuite's ``render_gpu_device_id`` (robomimic fills it from egl_probe), used only
      when no GPU is asked for.

    EGL enumerates devices in its own order, whatever CUDA_VISIBLE_DEVICES says, so the target GPU
    (``render_target``) is matched by the CUDA number EGL reports. Only where no EGL device reports
    one is the GPU id taken as the EGL index (true when EGL lists the GPUs in PCI bus order, the
    order of nvidia-smi; with ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` CUDA agrees). The note says which.
    """
    n = len(egl_cuda)
    if n < 1:
        raise UserInputError("no EGL device found; install a GPU driver with EGL or Mesa's libEGL, "
                             "or set MUJOCO_GL=osmesa")
    target = render_target(environ, render_device)
    if target is None:
        first = requested if 0 <= requested < n else 0
        return EGLChoice([first] + [i for i in range(n) if i != first], None)
    reported = {i: c for i, c in enumerate(egl_cuda) if c is not None}
    unique = len(set(reported.values())) == len(reported)
    if reported and unique and target.ordinal is not None:
        match = [i for i, c in reported.items() if c == target.ordinal]
        if not match:
            seen = ", ".join(f"EGL {i} = cuda:{c}" for i, c in sorted(reported.items()))
            raise UserInputError(f"no EGL device renders on {target.describe()}: EGL reports {seen}; "
                                 "pick a GPU that exists (MUJOCO_EGL_DEVICE_ID, CUDA_VISIBLE_DEVICES, training.device)")
        return EGLChoice(match, f"rendering on EGL device {match[0]}, {target.describe()}, "
                                "matched by EGL_CUDA_DEVICE_NV")
    why = ("EGL reports no CUDA device (EGL_NV_device_cuda unavailable)" if not reported else
           "EGL reports the same CUDA device twice" if not unique else "CUDA sees no GPU")
    if target.gpu is None:
        return EGLChoice(list(range(n)), f"{why} and the GPU id is unknown ({target.describe()}): "
                                         "rendering on the first EGL device that initializes")
    if not 0 <= target.gpu < n:
        raise UserInputError(f"EGL device {target.gpu} ({target.describe()}) does not exist; "
                             f"this machine has {n} EGL device(s), 0..{n - 1}")
    return EGLChoice([target.gpu], f"rendering on EGL device {target.gpu}, {target.describe()}, by index: {why}; "
                                   "this assumes EGL lists GPUs in PCI bus order (set MUJOCO_EGL_DEVICE_ID if not)")


def fast_render_enabled(environ: Mapping[str, str] | None = None) -> bool:
    environ = os.environ if environ is None else environ
    return environ.get(FAST_RENDER_VAR, "1").strip().lower() not in _OFF_VALUES


def _fast_now() -> bool:
    return fast_render_enabled() if _state["fast"] is None else _state["fast"]


def _egl_device_functions(EGL):
    """(eglQueryDeviceAttribEXT, eglQueryDeviceStringEXT) from EGL_EXT_device_query, None where missing."""
    if "query" not in _state:
        attrib_t = ctypes.CFUNCTYPE(EGL.EGLBoolean, EGL.EGLDeviceEXT, EGL.EGLint, ctypes.POINTER(ctypes.c_ssize_t))  # EGLAttrib = intptr_t
        string_t = ctypes.CFUNCTYPE(ctypes.c_char_p, EGL.EGLDeviceEXT, EGL.EGLint)
        found = []
        for name, proto in (("eglQueryDeviceAttribEXT", attrib_t), ("eglQueryDeviceStringEXT", string_t)):
            address = EGL.eglGetProcAddress(name)
            found.append(proto(address) if address else None)
        _state["query"] = tuple(found)
    return _state["query"]


def egl_cuda_numbers(EGL, devices) -> list[int | None]:
    """Per EGL device, the CUDA device number EGL reports (``EGL_CUDA_DEVICE_NV``), None where it cannot."""
    query_attrib, query_string = _egl_device_functions(EGL)
    numbers = []
    for device in devices:
        number = None
        if query_attrib is not None:
            extensions = query_string(device, EGL_EXTENSIONS) if query_string is not None else None
            if extensions is None or b"EGL_NV_device_cuda" in extensions:
                value = ctypes.c_ssize_t(-1)
                if query_attrib(device, EGL_CUDA_DEVICE_NV, ctypes.byref(value)) == EGL.EGL_TRUE and value.value >= 0:
                    number = int(value.value)
        EGL.eglGetError()  # clear EGL_BAD_ATTRIBUTE etc., the display checks below read the error state
        numbers.append(number)
    return numbers


def _note(message: str | None) -> None:
    """Say once per process how the render GPU was chosen: to zprl's log when it has a handler, else stderr."""
    if message is None or message in _state["noted"]:
        return
    _state["noted"].add(message)
    if log.hasHandlers():
        log.info(message)
    else:
        print(f"zprl render [pid {os.getpid()}]: {message}", file=sys.stderr, flush=True)


def set_render_device(device) -> None:
    """The torch device the policy runs on (``cuda:N``), for envs built afterwards in this process:
    they render on that GPU unless MUJOCO_EGL_DEVICE_ID names another (``render_target``)."""
    _state["render_device"] = None if device is None else str(device)


def _open_display(device_id: int = -1):
    """Replacement for robosuite's ``create_initialized_egl_device_display``."""
    from mujoco.egl import egl_ext as EGL
    from OpenGL import error

    devices = EGL.eglQueryDevicesEXT()
    choice = select_egl_devices(os.environ, egl_cuda_numbers(EGL, devices), device_id, _state["render_device"])
    _note(choice.note)
    for idx in choice.devices:
        display = EGL.eglGetPlatformDisplayEXT(EGL.EGL_PLATFORM_DEVICE_EXT, devices[idx], None)
        if display == EGL.EGL_NO_DISPLAY or EGL.eglGetError() != EGL.EGL_SUCCESS:
            continue
        try:  # depending on PyOpenGL's configuration a failure raises or only sets eglGetError
            ok = EGL.eglInitialize(display, None, None)
        except error.GLError:
            continue
        if ok == EGL.EGL_TRUE and EGL.eglGetError() == EGL.EGL_SUCCESS:
            return display
    return EGL.EGL_NO_DISPLAY


def _patch_egl() -> bool:
    if os.environ.get("MUJOCO_GL", "").strip().lower() != "egl":
        return False  # robosuite's EGL module refuses to import on other platforms
    from OpenGL import error
    from robosuite.renderers.context import egl_context

    # EGLGLContext looks the function up in its module at call time, so rebinding it is enough.
    egl_context.create_initialized_egl_device_display = _open_display

    original_free = egl_context.EGLGLContext.free

    def free(self):
        # At interpreter exit robosuite's atexit eglTerminate runs before contexts are collected;
        # destroying a context on the terminated display then fails harmlessly but prints a
        # traceback per env. Nothing is left to release in that case.
        try:
            original_free(self)
        except error.GLError:
            self._context = None

    egl_context.EGLGLContext.free = free
    return True


def shadow_map_size(model) -> int:
    """The shadow map the GL context needs: the model's size if a light casts shadows, else 1x1.

    MuJoCo allocates a shadowsize^2 depth texture (default 4096^2) for every context; robosuite's
    arenas light the scene with lights that cast no shadow, so the map is never drawn into, yet on
    Mesa's llvmpipe it holds ~64 MiB of host memory per env. Pixels are unchanged
    (tests/test_render_patch.py). Read at context creation: switching a light's castshadow on later
    needs a new context (robosuite never does).
    """
    return int(model.vis.quality.shadowsize) if model.light_castshadow.any() else 1


def _patch_render_context() -> None:
    import mujoco
    from robosuite.utils import binding_utils

    original = binding_utils.MjRenderContext._set_mujoco_context_and_buffers

    def set_context_and_buffers(self):
        fast = getattr(self, "_zprl_fast", None)
        if fast is None:  # first context of this renderer: decide once, so resizes stay consistent
            fast = self._zprl_fast = _fast_now()
            if fast:
                w, h = _state["buffer_size"]
                vis = self.model._model.vis
                vis.global_.offwidth, vis.global_.offheight = int(w), int(h)
        quality = self.model._model.vis.quality
        samples, shadow = quality.offsamples, quality.shadowsize
        if fast:
            quality.offsamples = 0  # read only while the GL context is made
            quality.shadowsize = shadow_map_size(self.model._model)
        original(self)
        # Put the model's values back so model XML saved from this env (datasets keep it) is unchanged.
        quality.offsamples, quality.shadowsize = samples, shadow
        if fast:
            self.scn.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0

    binding_utils.MjRenderContext._set_mujoco_context_and_buffers = set_context_and_buffers


def apply_render_patches(fast: bool | None = None, buffer_size: tuple[int, int] | None = None) -> dict:
    """Install both patches once per process; later calls only update the switches.

    fast: force the fast path on/off for render contexts created from now on (None: read
      ZPRL_FAST_RENDER each time, default on).
    buffer_size: (width, height) the offscreen buffer starts at; robosuite enlarges it when a
      bigger image is requested (each enlargement rebuilds the GL context, ~0.3 s on llvmpipe).
    """
    if fast is not None:
        _state["fast"] = bool(fast)
    if buffer_size is not None:
        _state["buffer_size"] = (max(1, int(buffer_size[0])), max(1, int(buffer_size[1])))
    if not _state["patched"]:
        _state["egl"] = _patch_egl()
        _patch_render_context()
        _state["patched"] = True
    return {"egl": _state["egl"], "fast": _fast_now(), "buffer_size": _state["buffer_size"]}


@contextlib.contextmanager
def fast_render(enabled: bool | None):
    """Temporarily force the fast path on/off (None: follow ZPRL_FAST_RENDER) for envs built inside."""
    apply_render_patches()
    saved = _state["fast"]
    _state["fast"] = enabled
    try:
        yield
    finally:
        _state["fast"] = saved
