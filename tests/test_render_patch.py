"""Our robosuite 1.4.1 rendering patches: EGL device rule (pure function) and the fast offscreen
path (real rendering, 84x84 agentview + eye-in-hand, same scene with and without the patch)."""

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


@pytest.mark.parametrize("environ, requested, expected", [
    ({}, -1, [0, 1, 2, 3]),                                   # nothing chosen: all, in order
    ({}, 2, [2, 0, 1, 3]),                                    # robomimic's egl_probe pick first
    ({"CUDA_VISIBLE_DEVICES": "2,3"}, 0, [2]),                # cuda:0 is GPU 2: render there too
    ({"CUDA_VISIBLE_DEVICES": "3"}, -1, [3]),
    ({"CUDA_VISIBLE_DEVICES": "2,3", "MUJOCO_EGL_DEVICE_ID": "3"}, 0, [3]),
    ({"MUJOCO_EGL_DEVICE_ID": "1"}, 3, [1]),                  # mujoco's meaning: an EGL index
    ({"CUDA_VISIBLE_DEVICES": ""}, 1, [1, 0, 2, 3]),          # empty / -1: no GPU for CUDA
    ({"CUDA_VISIBLE_DEVICES": "-1"}, -1, [0, 1, 2, 3]),
    ({"CUDA_VISIBLE_DEVICES": "GPU-5e2c"}, -1, [0, 1, 2, 3]),  # UUIDs cannot be mapped here
    ({"MUJOCO_EGL_DEVICE_ID": ""}, -1, [0, 1, 2, 3]),
])
def test_egl_device_rule(environ, requested, expected):
    assert select_egl_devices(environ, 4, requested) == expected


@pytest.mark.parametrize("environ, n_devices, words", [
    ({"CUDA_VISIBLE_DEVICES": "0,11", "MUJOCO_EGL_DEVICE_ID": "1"}, 12, "not in CUDA_VISIBLE_DEVICES"),
    ({"MUJOCO_EGL_DEVICE_ID": "gpu1"}, 4, "not a device index"),
    ({"CUDA_VISIBLE_DEVICES": "5"}, 4, "does not exist"),
    ({"MUJOCO_EGL_DEVICE_ID": "4"}, 4, "does not exist"),
    ({}, 0, "no EGL device"),
])
def test_egl_device_rule_rejects_impossible_choices(environ, n_devices, words):
    with pytest.raises(UserInputError, match=words):
        select_egl_devices(environ, n_devices)


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
                 int(ctx.scn.flags[mujoco.mjtRndFlag.mjRND_REFLECTION]))
        assert env.env.env.sim.model._model.vis.quality.offsamples == 4  # model (and saved XML) untouched
        frame = env.render()  # the video path: same camera and size as the agentview observation
        return {k: obs[k] * 255.0 for k in CAMS}, flags, frame
    finally:
        env.close()


def test_fast_path_renders_the_same_scene():
    fast, fast_flags, fast_frame = _render_pair(True)
    slow, slow_flags, _ = _render_pair(False)
    # buffer sized to the largest image asked for, no MSAA, no reflection pass; robosuite's defaults otherwise
    assert fast_flags == (84, 84, 0, 0)
    assert slow_flags == (640, 480, 4, 1)
    for key in CAMS:
        a, b = fast[key], slow[key]
        assert a.shape == (3, 84, 84) and a.std() > 10  # a real scene, not a blank buffer
        assert np.abs(a - b).mean() < 4.0  # of 255: edge anti-aliasing and reflections only
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.98
        assert not np.array_equal(a, b)  # MSAA really is off on one side
    # videos and observations share the upright convention (robomimic flips robosuite's GL image)
    np.testing.assert_allclose(fast_frame.transpose(2, 0, 1).astype(np.float32), fast["agentview_image"],
                               atol=1e-3)
