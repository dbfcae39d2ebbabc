"""Our fixes to robosuite 1.4.1 offscreen rendering (see patches/README.md for the why).

(a) EGL device selection: one rule, ``select_egl_devices(environ, n_devices, requested)``, a pure
    function of the environment variables, replaces robosuite's mix of CUDA ids and egl_probe ids.
(b) Fast offscreen rendering: the offscreen buffer starts at the largest image the env asks for
    (robosuite grows it on demand) instead of MuJoCo's 640x480, without multisampling and without
    the reflection pass. On software GL (Mesa llvmpipe) this is about 3x faster per camera image.

``apply_render_patches()`` is idempotent and is called by ``zprl.env.robomimic_env.create_env``.
The fast path is read at GL-context creation, so it can be switched per env in one process:
``ZPRL_FAST_RENDER=0`` (or ``apply_render_patches(fast=False)``) restores robosuite's rendering.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping

from zprl.common.errors import UserInputError

FAST_RENDER_VAR = "ZPRL_FAST_RENDER"
_OFF_VALUES = ("0", "false", "no", "off")

# Process-wide switches read when a render context is created.
_state = {"patched": False, "fast": None, "buffer_size": (1, 1)}


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


def select_egl_devices(environ: Mapping[str, str], n_devices: int, requested: int = -1) -> list[int]:
    """EGL device indices to try, in order, for this process.

    - ``MUJOCO_EGL_DEVICE_ID`` (an EGL device index, as in mujoco's own EGL backend) wins; when
      ``CUDA_VISIBLE_DEVICES`` lists GPUs it must be one of them, so rendering and CUDA share a GPU.
    - else the first GPU in ``CUDA_VISIBLE_DEVICES``: the GPU this process's ``cuda:0`` lives on.
    - else ``requested`` (robosuite's ``render_gpu_device_id``; robomimic fills it from egl_probe)
      first, then every other device as a fallback.
    Physical GPU ids equal EGL indices when both follow the PCI bus order (nvidia-smi's order; set
    ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` so CUDA agrees). Raises UserInputError for impossible values.
    """
    if n_devices < 1:
        raise UserInputError("no EGL device found; install a GPU driver with EGL or Mesa's libEGL, "
                             "or set MUJOCO_GL=osmesa")
    visible = _int_list(environ.get("CUDA_VISIBLE_DEVICES", ""))
    chosen = environ.get("MUJOCO_EGL_DEVICE_ID")
    if chosen is not None and chosen.strip() != "":
        if not chosen.strip().isdigit():
            raise UserInputError(f"MUJOCO_EGL_DEVICE_ID={chosen!r} is not a device index; set an integer "
                                 f"between 0 and {n_devices - 1}")
        idx = int(chosen)
        if visible and idx not in visible:
            raise UserInputError(f"MUJOCO_EGL_DEVICE_ID={idx} is not in CUDA_VISIBLE_DEVICES="
                                 f"{environ.get('CUDA_VISIBLE_DEVICES')}; pick one of the visible GPUs")
    elif visible:
        idx = visible[0]
    else:
        first = requested if 0 <= requested < n_devices else 0
        return [first] + [i for i in range(n_devices) if i != first]
    if not 0 <= idx < n_devices:
        raise UserInputError(f"EGL device {idx} (from MUJOCO_EGL_DEVICE_ID / CUDA_VISIBLE_DEVICES) does not exist; "
                             f"this machine has {n_devices} EGL device(s), 0..{n_devices - 1}")
    return [idx]


def fast_render_enabled(environ: Mapping[str, str] | None = None) -> bool:
    environ = os.environ if environ is None else environ
    return environ.get(FAST_RENDER_VAR, "1").strip().lower() not in _OFF_VALUES


def _fast_now() -> bool:
    return fast_render_enabled() if _state["fast"] is None else _state["fast"]


def _open_display(device_id: int = -1):
    """Replacement for robosuite's ``create_initialized_egl_device_display``."""
    from mujoco.egl import egl_ext as EGL
    from OpenGL import error

    devices = EGL.eglQueryDevicesEXT()
    for idx in select_egl_devices(os.environ, len(devices), device_id):
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
        samples = quality.offsamples
        if fast:
            quality.offsamples = 0  # read only while the GL context is made
        original(self)
        # Put the model's value back so model XML saved from this env (datasets keep it) is unchanged.
        quality.offsamples = samples
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
