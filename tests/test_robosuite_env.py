"""The rollout envs' simulator (RobosuiteEnv) behaves as robomimic's EnvRobosuite, without torch."""

import numpy as np
import psutil
import pytest

from zprl.data.rotation import abs_action_to_rot6d, rot6d_action_to_abs
from zprl.env.robomimic_env import LOW_DIM_KEYS, create_env, make_env_meta
from zprl.env.robosuite_env import RobosuiteEnv
from zprl.env.vector_env import RolloutEnvConfig, make_vector_env
from zprl.env.wrappers import numpy_global_rng, rot6d_action_to_abs_np


def _pair(meta, obs_keys, abs_action):
    """The same env twice: robomimic's (datasets' reference) and ours, each with the same model draw."""
    with numpy_global_rng(np.random.RandomState(0)):
        ours = RobosuiteEnv(meta, obs_keys, abs_action=abs_action, hard_reset=False)
    with numpy_global_rng(np.random.RandomState(0)):
        theirs = create_env(meta, obs_keys=obs_keys, abs_action=abs_action, hard_reset=False)
    return ours, theirs


def _assert_same_obs(a, b, keys):
    assert set(a) == set(keys)
    for key in keys:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
        assert np.asarray(a[key]).dtype == np.asarray(b[key]).dtype, key


@pytest.mark.parametrize("task,obs", [("lift", "low_dim"), ("lift", "image"), ("transport", "low_dim")])
def test_steps_like_robomimic_envrobosuite(task, obs):
    meta = make_env_meta(task, obs=obs, image_size=32)
    n_arms = 2 if task == "transport" else 1
    keys = list(LOW_DIM_KEYS) + ([f"robot1_{k[len('robot0_'):]}" for k in LOW_DIM_KEYS if k.startswith("robot0_")]
                                 if n_arms == 2 else [])
    if obs == "image":
        keys += ["agentview_image", "robot0_eye_in_hand_image"]
    ours, theirs = _pair(meta, keys, abs_action=False)
    try:
        with numpy_global_rng(np.random.RandomState(7)):
            first = ours.reset()
        with numpy_global_rng(np.random.RandomState(7)):
            ref = theirs.reset()
        _assert_same_obs(first, {k: ref[k] for k in keys}, keys)
        if obs == "image":
            assert first["agentview_image"].dtype == np.uint8 and first["agentview_image"].shape == (32, 32, 3)
        rng = np.random.default_rng(0)
        for _ in range(15):
            action = rng.uniform(-0.5, 0.5, size=7 * n_arms)
            o1, r1, d1, _ = ours.step(action)
            o2, r2, d2, _ = theirs.step(action)
            _assert_same_obs(o1, {k: o2[k] for k in keys}, keys)
            assert (r1, d1, ours.is_success()) == (r2, d2, theirs.is_success())
        state = np.array(theirs.env.sim.get_state().flatten())
        np.testing.assert_array_equal(np.array(ours.env.sim.get_state().flatten()), state)
        # reset_to a stored state (from another episode): the same observation as robomimic's reset_to
        ours.reset()
        restored = ours.reset_to({"states": state})
        _assert_same_obs(restored, {k: theirs.reset_to({"states": state})[k] for k in keys}, keys)
        np.testing.assert_array_equal(ours.render(height=24, width=24, camera_name="agentview")
                                      if obs == "image" else 0,
                                      theirs.render(mode="rgb_array", height=24, width=24, camera_name="agentview")
                                      if obs == "image" else 0)
    finally:
        ours.env.close()
        theirs.env.close()


def test_rot6d_actions_convert_like_the_torch_map():
    rng = np.random.default_rng(0)
    actions = [rng.normal(size=10) for _ in range(200)] + [rng.normal(size=20) for _ in range(50)]
    # rotations close to pi, where the rotation vector is least well conditioned
    for eps in (1e-2, 1e-5, 1e-8):
        axis = rng.normal(size=3)
        aa = axis / np.linalg.norm(axis) * (np.pi - eps)
        actions.append(np.asarray(abs_action_to_rot6d(np.concatenate([[0.1, 0.2, 0.3], aa, [1.0]])[None]))[0])
    # degenerate columns (parallel, zero) and the identity
    actions += [np.r_[0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, -1.0], np.zeros(10),
                np.r_[0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0]]
    for action in actions:
        np.testing.assert_allclose(rot6d_action_to_abs_np(action), np.asarray(rot6d_action_to_abs(action[None]))[0],
                                   atol=1e-12, rtol=0)


def test_env_workers_do_not_load_torch():
    """A worker process holds robosuite and MuJoCo, not torch or robomimic (what made workers ~1 GB), nor
    OpenCV, which robosuite imports for a viewer a worker never opens (zprl.env.deferred_import)."""
    meta = make_env_meta("lift", obs="low_dim")
    shape_meta = {"obs": {k: {"shape": [s], "type": "low_dim"} for k, s in
                          (("robot0_eef_pos", 3), ("robot0_eef_quat", 4), ("robot0_gripper_qpos", 2), ("object", 10))},
                  "action": {"shape": [10]}}
    cfg = RolloutEnvConfig(env_meta=meta, shape_meta=shape_meta, n_action_steps=2, max_steps=20, render_size=None)
    venv = make_vector_env(cfg, 1, asynchronous=True)
    try:
        obs, _ = venv.reset(seed=[0])
        chunk = np.concatenate([obs["robot0_eef_pos"][:, -1], np.tile([1, 0, 0, 0, -1, 0, -1.0], (1, 1))], -1)
        venv.step(np.repeat(chunk[:, None], 2, axis=1).astype(np.float32))  # a rot6d chunk: the numpy path
        libraries = {m.path for m in psutil.Process(venv.processes[0].pid).memory_maps()}
    finally:
        venv.close()
    assert any("libmujoco" in p for p in libraries)
    assert not [p for p in libraries if "libtorch" in p]
    assert not [p for p in libraries if "/cv2/" in p]
