"""Our robosuite 1.4.1 rendering patches: EGL device rule (pure function) and the fast offscreen
path (real rendering, 84x84 agentview + eye-in-hand, same scene with and without the patch)."""

import ctypes

import mujoco
import numpy as np
import pytest

from zprl.common.errors import UserInputError
from zprl.env import render_patch
from zprl.env.render_patch import apply_render_patches, fast_render, fast_render_enabled, select_egl_devices
from zprl.env.robomimic_env import make_env_meta
from zprl.env.wrappers import RobomimicGymEnv

CAMS = ["agentview_image", "robot0_eye_in_hand_image"]
SHAPE_META = {
    "obs": {
        "agentview_image": {"shape": [3, 84, 84], "type": "rgb"},
        "robot0_eye_in_hand_image": {"shape": [3, 84, 84], "type": "rgb"},
        "robot0_eef_pos": {"shape": [3], "type": "low_dim"},
    },
    "action": {"shape": [7]},
}


NO_NV = [None] * 4  # what Mesa (or a driver without EGL_NV_device_cuda) reports: no CUDA numbers


@pytest.mark.parametrize("environ, requested, expected", [
    ({}, -1, [0, 1, 2, 3]),                                   # nothing chosen: all, in order
    ({}, 2, [2, 0, 1, 3]),                                    # robomimic's egl_probe pick first
    ({"CUDA_VISIBLE_DEVICES": "2,3"}, 0, [2]),                # cuda:0 is GPU 2: render there too
    ({"CUDA_VISIBLE_DEVICES": "3"}, -1, [3]),
    ({"CUDA_VISIBLE_DEVICES": "2,3", "MUJOCO_EGL_DEVICE_ID": "3"}, 0, [3]),
    ({"MUJOCO_EGL_DEVICE_ID": "1"}, 3, [1]),                  # a GPU id; without EGL's answer, its index
    ({"CUDA_VISIBLE_DEVICES": ""}, 1, [1, 0, 2, 3]),          # empty / -1: no GPU for CUDA
    ({"CUDA_VISIBLE_DEVICES": "-1"}, -1, [0, 1, 2, 3]),
    ({"CUDA_VISIBLE_DEVICES": "GPU-5e2c"}, -1, [0, 1, 2, 3]),  # UUIDs: no GPU id to use as an index
    ({"MUJOCO_EGL_DEVICE_ID": ""}, -1, [0, 1, 2, 3]),
])
def test_egl_device_rule_by_index_where_egl_cannot_say(environ, requested, expected):
    choice = select_egl_devices(environ, NO_NV, requested)
    assert choice.devices == expected
    # a GPU was asked for: the log line says the index was used and why
    assert (choice.note is None) == (not environ.get("CUDA_VISIBLE_DEVICES", "").strip("-1")
                                     and not environ.get("MUJOCO_EGL_DEVICE_ID"))
    if choice.note and len(expected) == 1:
        assert "by index" in choice.note and "EGL_NV_device_cuda unavailable" in choice.note


# A machine whose EGL lists its GPUs in another order than CUDA, as EGL reports them through
# EGL_CUDA_DEVICE_NV (CUDA numbers, i.e. after CUDA_VISIBLE_DEVICES): EGL 0 is the GPU CUDA calls 2.
@pytest.mark.parametrize("environ, egl_cuda, render_device, expected", [
    ({}, [2, 0, 1, 3], None, [0, 1, 2, 3]),                          # nothing asked: EGL's order
    ({"MUJOCO_EGL_DEVICE_ID": "1"}, [2, 0, 1, 3], None, [2]),        # GPU 1 is EGL 2, not EGL 1
    ({}, [2, 0, 1, 3], "cuda:2", [0]),                               # the policy's GPU
    ({}, [2, 0, 1, 3], "cuda", [1]),                                 # cuda = cuda:0
    ({"MUJOCO_EGL_DEVICE_ID": "3"}, [2, 0, 1, 3], "cuda:2", [3]),    # the variable wins over the device
    # CUDA_VISIBLE_DEVICES=3,1: cuda:0 is GPU 3, cuda:1 is GPU 1; hidden GPUs report nothing
    ({"CUDA_VISIBLE_DEVICES": "3,1"}, [None, 1, None, 0], None, [3]),
    ({"CUDA_VISIBLE_DEVICES": "3,1"}, [None, 1, None, 0], "cuda:1", [1]),
    ({"CUDA_VISIBLE_DEVICES": "3,1", "MUJOCO_EGL_DEVICE_ID": "1"}, [None, 1, None, 0], None, [1]),
    ({"CUDA_VISIBLE_DEVICES": "GPU-5e2c"}, [None, 0], None, [1]),    # UUIDs map too: by CUDA number
    ({"CUDA_VISIBLE_DEVICES": "0"}, [None, 0], "cpu", [1]),           # mixed list (Mesa device first)
])
def test_egl_device_matched_by_cuda_number(environ, egl_cuda, render_device, expected):
    choice = select_egl_devices(environ, egl_cuda, render_device=render_device)
    assert choice.devices == expected
    if len(expected) == 1:
        assert "matched by EGL_CUDA_DEVICE_NV" in choice.note and f"EGL device {expected[0]}" in choice.note


def test_egl_device_falls_back_to_index_when_numbers_repeat():
    choice = select_egl_devices({"CUDA_VISIBLE_DEVICES": "1"}, [0, 0, 0])
    assert choice.devices == [1] and "same CUDA device twice" in choice.note


@pytest.mark.parametrize("environ, egl_cuda, render_device, words", [
    ({"CUDA_VISIBLE_DEVICES": "0,11", "MUJOCO_EGL_DEVICE_ID": "1"}, [None] * 12, None, "not in CUDA_VISIBLE_DEVICES"),
    ({"MUJOCO_EGL_DEVICE_ID": "gpu1"}, NO_NV, None, "is not a GPU id"),
    ({"CUDA_VISIBLE_DEVICES": "5"}, NO_NV, None, "does not exist"),
    ({"MUJOCO_EGL_DEVICE_ID": "4"}, NO_NV, None, "does not exist"),
    ({}, [], None, "no EGL device"),
    ({}, [0, 1], "cuda:2", "no EGL device renders on cuda:2"),                   # EGL knows no cuda:2
    ({"CUDA_VISIBLE_DEVICES": "0,1"}, NO_NV, "cuda:2", "device cuda:2 does not exist"),
    ({"CUDA_VISIBLE_DEVICES": "-1"}, NO_NV, "cuda:0", "hides every GPU"),
    ({"CUDA_VISIBLE_DEVICES": "GPU-5e2c", "MUJOCO_EGL_DEVICE_ID": "0"}, NO_NV, None, "by UUID"),
])
def test_egl_device_rule_rejects_impossible_choices(environ, egl_cuda, render_device, words):
    with pytest.raises(UserInputError, match=words):
        select_egl_devices(environ, egl_cuda, render_device=render_device)


class _FakeEGL:
    """The few EGL entry points egl_cuda_numbers uses, answering like a 3-device NVIDIA + Mesa machine."""

    EGLBoolean, EGLint, EGL_TRUE, EGL_FALSE = ctypes.c_uint, ctypes.c_int32, 1, 0
    EGLDeviceEXT = ctypes.c_void_p

    def __init__(self, numbers):
        self.numbers, self.errors_cleared = numbers, 0

    def eglGetError(self):
        self.errors_cleared += 1
        return 0x3000


def test_egl_query_results_are_read_per_device(monkeypatch):
    numbers = {1: 2, 2: 0, 3: None}  # device handle -> CUDA number (None: Mesa, no extension)

    def query_attrib(device, attribute, value):
        assert attribute == render_patch.EGL_CUDA_DEVICE_NV
        if numbers[device] is None:
            return 0
        value._obj.value = numbers[device]
        return 1

    def query_string(device, name):
        assert name == render_patch.EGL_EXTENSIONS
        return b"EGL_MESA_device_software" if numbers[device] is None else b"EGL_NV_device_cuda EGL_EXT_device_drm"

    monkeypatch.setitem(render_patch._state, "query", (query_attrib, query_string))
    egl = _FakeEGL(numbers)
    assert render_patch.egl_cuda_numbers(egl, [1, 2, 3]) == [2, 0, None]
    assert egl.errors_cleared == 3  # EGL's error state is cleared after every query


def test_real_egl_query_on_this_machine_reports_no_cuda_and_leaves_no_error():
    """Mesa's EGL has EGL_EXT_device_query but not EGL_NV_device_cuda: every device reports None, even
    when asked for the attribute anyway, and the error that query sets is cleared."""
    from mujoco.egl import egl_ext as EGL

    devices = EGL.eglQueryDevicesEXT()
    assert render_patch.egl_cuda_numbers(EGL, devices) == [None] * len(devices)
    attrib, _ = render_patch._egl_device_functions(EGL)
    saved = render_patch._state["query"]
    render_patch._state["query"] = (attrib, lambda device, name: b"EGL_NV_device_cuda")  # force the query
    try:
        assert render_patch.egl_cuda_numbers(EGL, devices) == [None] * len(devices)
    finally:
        render_patch._state["query"] = saved
    assert EGL.eglGetError() == EGL.EGL_SUCCESS


def test_fast_render_switch_parsing():
    assert fast_render_enabled({}) and fast_render_enabled({"ZPRL_FAST_RENDER": "1"})
    assert not any(fast_render_enabled({"ZPRL_FAST_RENDER": v}) for v in ("0", "false", "OFF", " no "))


def test_patches_are_idempotent_and_installed():
    from robosuite.renderers.context import egl_context
    from robosuite.utils import binding_utils

    apply_render_patches()
    method = binding_utils.MjRenderContext._set_mujoco_context_and_buffers
    state = apply_render_patches()
    assert binding_utils.MjRenderContext._set_mujoco_context_and_buffers is method  # not wrapped twice
    assert state["egl"] is True  # tests run with MUJOCO_GL=egl (conftest)
    assert egl_context.create_initialized_egl_device_display is render_patch._open_display


def _render_pair(fast: bool):
    meta = make_env_meta("lift", obs="image", image_size=84, abs_action=True)
    with fast_render(fast):
        env = RobomimicGymEnv(meta, SHAPE_META, abs_action=True, max_steps=10, render_size=(84, 84))
    try:
        obs, _ = env.reset(seed=11)
        hold = np.r_[obs["robot0_eef_pos"] + [0.0, 0.0, -0.05], np.pi, 0.0, 0.0, 1.0]
        for _ in range(3):
            obs, *_ = env.step(hold)
        ctx = env.env.env.sim._render_context_offscreen
        flags = (ctx.con.offWidth, ctx.con.offHeight, ctx.con.offSamples,
                 int(ctx.scn.flags[mujoco.mjtRndFlag.mjRND_REFLECTION]), ctx.con.shadowSize)
        quality = env.env.env.sim.model._model.vis.quality
        assert (quality.offsamples, quality.shadowsize) == (4, 4096)  # model (and saved XML) untouched
        frame = env.render()  # the video path: same camera and size as the agentview observation
        return {k: obs[k] * 255.0 for k in CAMS}, flags, frame
    finally:
        env.close()


def test_fast_path_renders_the_same_scene():
    fast, fast_flags, fast_frame = _render_pair(True)
    slow, slow_flags, _ = _render_pair(False)
    # buffer sized to the largest image asked for, no MSAA, no reflection pass, a 1x1 shadow map (Lift's
    # light casts no shadow); robosuite's defaults otherwise
    assert fast_flags == (84, 84, 0, 0, 1)
    assert slow_flags == (640, 480, 4, 1, 4096)
    for key in CAMS:
        a, b = fast[key], slow[key]
        assert a.shape == (3, 84, 84) and a.std() > 10  # a real scene, not a blank buffer
        assert np.abs(a - b).mean() < 4.0  # of 255: edge anti-aliasing and reflections only
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.98
        assert not np.array_equal(a, b)  # MSAA really is off on one side
    # videos and observations share the upright convention (robomimic flips robosuite's GL image)
    np.testing.assert_allclose(fast_frame.transpose(2, 0, 1).astype(np.float32), fast["agentview_image"],
                               atol=1e-3)


def test_shrunk_shadow_map_changes_no_pixel(monkeypatch):
    """The 1x1 shadow map saves ~64 MiB per image env on llvmpipe; with no shadow-casting light the
    full 4096^2 map renders the very same pixels."""
    small, small_flags, small_frame = _render_pair(True)
    monkeypatch.setattr(render_patch, "shadow_map_size", lambda model: int(model.vis.quality.shadowsize))
    full, full_flags, full_frame = _render_pair(True)
    assert (small_flags[-1], full_flags[-1]) == (1, 4096)
    for key in CAMS:
        np.testing.assert_array_equal(small[key], full[key])
    np.testing.assert_array_equal(small_frame, full_frame)


def _image_rollout_config(**kw):
    from zprl.env.vector_env import RolloutEnvConfig

    meta = make_env_meta("lift", obs="image", image_size=84, abs_action=True)
    return RolloutEnvConfig(env_meta=meta, shape_meta=SHAPE_META, max_steps=5, render_size=None, **kw)


@pytest.mark.parametrize("kw, words", [
    ({"env_vars": {"MUJOCO_EGL_DEVICE_ID": "3"}}, "EGL device 3 .* does not exist"),
    ({"render_device": "cuda:2"}, "EGL device 2 \\(cuda:2 = GPU 2 \\(from the policy device cuda:2\\)\\) does not exist"),
])
def test_env_worker_asked_for_a_missing_gpu_fails_with_one_line(kw, words):
    """The choice is made where the GL context is, in the worker; its UserInputError reaches the parent
    as itself (not a traceback), so train.py / eval_base.py print it as one line."""
    from zprl.env.vector_env import make_vector_env

    venv = make_vector_env(_image_rollout_config(**kw), 1, asynchronous=True)
    try:
        with pytest.raises(UserInputError, match=words):
            venv.reset(seed=[0])
    finally:
        venv.close()


_LOG_PROBE = """
from zprl.env.vector_env import make_vector_env
import tests.test_render_patch as t
for _ in range(2):
    venv = make_vector_env(t._image_rollout_config(), 1, asynchronous=False)
    obs, _ = venv.reset(seed=[0])
    assert obs["agentview_image"].shape == (1, 1, 3, 84, 84) and obs["agentview_image"].max() > 0
    venv.close()
"""


def test_render_gpu_choice_is_logged_once_per_process(repo_root):
    """robosuite opens one EGL display per process, so the choice is made and logged once, in a fresh
    process (an env worker, or here a subprocess; without a logging handler the line goes to stderr)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "0", "PYTHONPATH": repo_root}
    env.pop("MUJOCO_EGL_DEVICE_ID", None)
    out = subprocess.run([sys.executable, "-c", _LOG_PROBE], cwd=repo_root, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    notes = [line for line in out.stderr.splitlines() if line.startswith("zprl render")]
    assert len(notes) == 1, out.stderr[-2000:]
    assert notes[0].endswith("rendering on EGL device 0, cuda:0 = GPU 0 (from CUDA_VISIBLE_DEVICES), by index: EGL "
                             "reports no CUDA device (EGL_NV_device_cuda unavailable); this assumes EGL lists GPUs in "
                             "PCI bus order (set MUJOCO_EGL_DEVICE_ID if not)")
