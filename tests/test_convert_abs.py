"""Delta -> absolute action conversion and robomimic file validation, on real robosuite rollouts."""

import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from zprl.common.errors import UserInputError
from zprl.data.convert_abs import convert_file, delta_to_absolute, make_replay_env, replay
from zprl.data.robomimic_file import check_robomimic_file
from zprl.env.robomimic_env import make_env_meta

OBS_KEYS = ("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos", "object")


def scripted_lift(env, rng, steps, rot_noise, solve=True):
    """Delta-action rollout: reach, grasp and lift the cube (solve=True) or wander with noise."""
    np.random.seed(int(rng.integers(2**31)))  # robosuite places objects with the global numpy RNG
    obs = env.reset()
    model = env.get_state()["model"]
    rec = {"states": [], "actions": [], "obs": [], "next_obs": []}
    phase, t_close = 0, 0
    for t in range(steps):
        cube, eef = obs["object"][:3], obs["robot0_eef_pos"]
        grip = -1.0
        if not solve:
            target = eef + rng.normal(0, 0.03, 3)
        elif phase == 0:
            target = cube + [0, 0, 0.06]
            phase = 1 if np.linalg.norm(target - eef) < 0.01 else 0
        elif phase == 1:
            target = cube + [0, 0, -0.005]
            if np.linalg.norm(target - eef) < 0.008:
                phase, t_close = 2, t
        elif phase == 2:
            target, grip = eef, 1.0
            phase = 3 if t - t_close > 8 else 2
        else:
            target, grip = cube + [0, 0, 0.2], 1.0
        action = np.zeros(7)
        action[:3] = np.clip((target - eef) * 15, -1, 1)
        action[3:6] = rng.normal(0, rot_noise, 3)
        if t % 10 == 0:  # robosuite keeps the old goal orientation when the rotation part is exactly 0
            action[3:6] = 0.0
        action[6] = grip
        rec["states"].append(env.get_state()["states"])
        rec["actions"].append(action)
        rec["obs"].append({k: obs[k] for k in OBS_KEYS})
        obs, _, _, _ = env.step(action)
        rec["next_obs"].append({k: obs[k] for k in OBS_KEYS})
    rec["success"] = bool(env.is_success()["task"])
    rec["model"] = model
    return rec


def write_robomimic(path, env_meta, episodes, masks=None):
    """Robomimic layout, as robomimic's own scripts write it."""
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        total = 0
        for i, ep in enumerate(episodes):
            g = data.create_group(f"demo_{i}")
            n = len(ep["actions"])
            g.attrs["num_samples"] = n
            g.attrs["model_file"] = ep["model"]
            g.create_dataset("states", data=np.array(ep["states"]))
            g.create_dataset("actions", data=np.array(ep["actions"]))
            rewards = np.zeros(n)
            rewards[-1] = float(ep["success"])
            g.create_dataset("rewards", data=rewards)
            g.create_dataset("dones", data=(np.arange(n) == n - 1).astype(np.int64))
            for part in ("obs", "next_obs"):
                for k in OBS_KEYS:
                    g.create_dataset(f"{part}/{k}", data=np.array([o[k] for o in ep[part]]))
            total += n
        data.attrs["total"] = total
        data.attrs["env_args"] = json.dumps(env_meta)
        for key, names in (masks or {}).items():
            f.create_dataset(f"mask/{key}", data=np.array(names, dtype="S"))


@pytest.fixture(scope="module")
def lift_delta(tmp_path_factory):
    meta = make_env_meta("lift", abs_action=False)
    env = make_replay_env(meta, abs_action=False)
    rng = np.random.default_rng(0)
    episodes = [scripted_lift(env, rng, 110, rot_noise=0.3), scripted_lift(env, rng, 40, 0.5, solve=False)]
    assert episodes[0]["success"] and not episodes[1]["success"]
    path = tmp_path_factory.mktemp("lift") / "low_dim.hdf5"
    write_robomimic(path, meta, episodes, masks={"train": ["demo_0", "demo_1"], "valid": []})
    return {"path": str(path), "meta": meta, "episodes": episodes, "env": env}


@pytest.fixture(scope="module")
def lift_abs(lift_delta, tmp_path_factory):
    out = tmp_path_factory.mktemp("lift_abs") / "low_dim_abs.hdf5"
    summary = convert_file(lift_delta["path"], out, show_progress=False)
    return {"path": str(out), "summary": summary}


def _eef_from_states(env, model, states):
    env.reset_to({"model": model, "states": states[0]})
    pos = []
    for s in states:
        env.env.sim.set_state_from_flattened(s)
        env.env.sim.forward()
        pos.append(env.env.sim.data.get_site_xpos(env.env.robots[0].controller.eef_name).copy())
    return np.array(pos)


# ------------------------------------------------------------------ validation


def test_check_describes_a_good_file(lift_delta):
    info = check_robomimic_file(lift_delta["path"], need_obs_keys=["object", "robot0_eef_pos"], action_dim=7,
                                filter_key="train")
    assert info["demos"] == ["demo_0", "demo_1"]
    assert info["action_dim"] == 7 and info["abs_action"] is False and info["is_generated"] is False
    assert info["obs_shapes"]["robot0_eef_pos"] == (3,) and info["obs_shapes"]["object"] == (10,)
    assert info["num_samples"] == {"demo_0": 110, "demo_1": 40}
    assert info["env_meta"]["env_name"] == "Lift" and info["masks"] == ["train", "valid"]


def assert_one_line_error(call, *needles):
    with pytest.raises(UserInputError) as exc:
        call()
    msg = str(exc.value)
    assert "\n" not in msg
    for needle in needles:
        assert needle in msg, msg
    return msg


def test_check_rejects_bad_files(lift_delta, tmp_path):
    good = lift_delta["path"]
    assert_one_line_error(lambda: check_robomimic_file(tmp_path / "nope.hdf5"), "dataset not found", "nope.hdf5")
    text = tmp_path / "notes.hdf5"
    text.write_text("not hdf5")
    assert_one_line_error(lambda: check_robomimic_file(text), "not an HDF5 file", str(text))
    no_data = tmp_path / "no_data.hdf5"
    with h5py.File(no_data, "w") as f:
        f.create_group("stuff")
    assert_one_line_error(lambda: check_robomimic_file(no_data), "no 'data' group")
    no_args = tmp_path / "no_args.hdf5"
    with h5py.File(no_args, "w") as f:
        f.create_group("data/demo_0").create_dataset("actions", data=np.zeros((2, 7)))
    assert_one_line_error(lambda: check_robomimic_file(no_args), "'env_args'")
    no_demos = tmp_path / "no_demos.hdf5"
    with h5py.File(no_demos, "w") as f:
        f.create_group("data").attrs["env_args"] = json.dumps(lift_delta["meta"])
    assert_one_line_error(lambda: check_robomimic_file(no_demos), "no demo groups")
    assert_one_line_error(lambda: check_robomimic_file(good, need_obs_keys=["agentview_image"]),
                    "'agentview_image'", good, "robot0_eef_pos")
    assert_one_line_error(lambda: check_robomimic_file(good, action_dim=10), "expected 10, found 7",
                    "stores delta actions", "python -m zprl.data.convert_abs")
    assert_one_line_error(lambda: check_robomimic_file(good, filter_key="test"), "'test'", "train, valid")
    assert_one_line_error(lambda: check_robomimic_file(good, filter_key="valid"), "'valid'", "lists no demos")
    assert_one_line_error(lambda: check_robomimic_file(good, abs_action=True), "delta actions", "convert_abs")


def test_action_dim_hint_for_absolute_files(lift_abs):
    msg = assert_one_line_error(lambda: check_robomimic_file(lift_abs["path"], action_dim=14), "expected 14, found 7",
                          "shape_meta")
    assert "convert_abs" not in msg


def test_convert_refuses_bad_requests_and_writes_nothing(lift_delta, lift_abs, tmp_path):
    out = tmp_path / "out.hdf5"
    assert_one_line_error(lambda: convert_file(tmp_path / "missing.hdf5", out), "dataset not found")
    assert_one_line_error(lambda: convert_file(lift_abs["path"], out), "already stores absolute actions")
    assert_one_line_error(lambda: convert_file(lift_delta["path"], lift_delta["path"]), "is the input file")
    out.write_bytes(b"keep me")
    assert_one_line_error(lambda: convert_file(lift_delta["path"], out), "exists", "--overwrite")
    assert out.read_bytes() == b"keep me"
    assert sorted(os.listdir(tmp_path)) == ["out.hdf5"]


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path):
    out = tmp_path / "out.hdf5"
    proc = subprocess.run([sys.executable, "-m", "zprl.data.convert_abs", "--input", str(tmp_path / "x.hdf5"),
                           "--output", str(out)], capture_output=True, text=True, cwd=os.getcwd())
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "dataset not found" in proc.stderr
    assert not out.exists()


# ------------------------------------------------------------------ conversion


def test_zero_delta_goal_is_the_current_pose(lift_delta):
    """Convention check: a no-op delta maps to the current eef pose (world frame, axis-angle)."""
    import robosuite.utils.transform_utils as T

    ep = lift_delta["episodes"][0]
    env = lift_delta["env"]
    states = np.array(ep["states"][:3])
    noop = np.zeros((3, 7))
    noop[:, 3] = 1e-9  # a rotation that is not exactly 0, so robosuite recomputes the goal orientation
    absolute = delta_to_absolute(env, states, noop, ep["model"])
    site = env.env.robots[0].controller.eef_name
    for t in range(3):
        # Compare with the kinematics of the stored state: robosuite's observations lag by a substep.
        env.env.sim.set_state_from_flattened(states[t])
        env.env.sim.forward()
        np.testing.assert_allclose(absolute[t, :3], env.env.sim.data.get_site_xpos(site), atol=1e-9)
        goal = T.quat2mat(T.axisangle2quat(absolute[t, 3:6]))
        # The controller's frame is the grip site; robot0_eef_quat is the hand body (90 deg about z apart).
        np.testing.assert_allclose(goal, env.env.sim.data.get_site_xmat(site), atol=1e-5)


def test_converted_file_replays_the_delta_trajectory(lift_delta, lift_abs):
    s = lift_abs["summary"]
    assert s["num_demos"] == 2 and s["num_samples"] == 150
    assert s["delta_success"] == 1 and s["abs_success_of_delta"] == 1 and s["abs_success"] == 1
    assert s["max_eef_gap_m"] < 1e-3

    info = check_robomimic_file(lift_abs["path"], need_obs_keys=OBS_KEYS, action_dim=7, abs_action=True)
    assert info["converted"]["converter"] == "zprl.data.convert_abs"
    assert info["converted"]["delta_success"] == 1
    assert info["env_meta"]["env_kwargs"]["controller_configs"]["control_delta"] is False

    env = make_replay_env(lift_delta["meta"], abs_action=True)
    with h5py.File(lift_delta["path"], "r") as src, h5py.File(lift_abs["path"], "r") as dst:
        assert list(dst["mask/train"][()]) == [b"demo_0", b"demo_1"]
        assert dst["data"].attrs["total"] == 150
        for demo, ep in zip(("demo_0", "demo_1"), lift_delta["episodes"]):
            a, b = src["data"][demo], dst["data"][demo]
            assert b.attrs["model_file"] == a.attrs["model_file"]
            for key in ("states", "rewards", "dones", "obs/object", "next_obs/robot0_eef_pos"):
                np.testing.assert_array_equal(a[key][()], b[key][()])
            actions = b["actions"][()]
            assert actions.shape == (len(ep["actions"]), 7)
            np.testing.assert_array_equal(actions[:, 6], a["actions"][:, 6])
            # Absolute actions from the first recorded state retrace the recorded (delta) run.
            ok, eef = replay(env, a["states"][0], actions, ep["model"])
            recorded = _eef_from_states(env, ep["model"], a["states"][()])
            assert np.linalg.norm(eef[:-1, 0] - recorded[1:], axis=1).max() < 1e-3
            assert ok == ep["success"]
            # The goal positions lead the recorded motion by at most one OSC step (5 cm).
            assert np.linalg.norm(actions[:, :3] - np.array([o["robot0_eef_pos"] for o in ep["obs"]]), axis=1).max() < 0.08


def test_two_arm_transport_gives_14_dims_and_retraces(tmp_path):
    meta = make_env_meta("transport", abs_action=False)
    env = make_replay_env(meta, abs_action=False)
    rng = np.random.default_rng(1)
    np.random.seed(1)
    env.reset()
    model, start = env.get_state()["model"], env.get_state()["states"]
    actions = np.concatenate([rng.normal(0, 0.4, (25, 7)), rng.normal(0, 0.4, (25, 7))], axis=1)
    actions[:, [6, 13]] = np.sign(actions[:, [6, 13]])
    states, eefs = [], []
    for a in actions:
        states.append(env.get_state()["states"])
        env.env.step(a)
        env.env.sim.forward()
        eefs.append([env.env.sim.data.get_site_xpos(r.controller.eef_name).copy() for r in env.env.robots])
    absolute = delta_to_absolute(env, np.array(states), actions, model)
    assert absolute.shape == (25, 14)
    np.testing.assert_array_equal(absolute[:, [6, 13]], actions[:, [6, 13]])
    abs_env = make_replay_env(meta, abs_action=True)
    _, eef = replay(abs_env, start, absolute, model)
    assert np.linalg.norm(eef - np.array(eefs), axis=-1).max() < 1e-3


def test_generated_lift_demos_replay_with_absolute_actions(tmp_path):
    from zprl.data.generate_demos import generate_demos

    delta = tmp_path / "low_dim_v141_subset.hdf5"
    generate_demos("lift", 2, "mixed", "low_dim", seed=0, output=str(delta), show_progress=False)
    out = tmp_path / "low_dim_v141_subset_abs.hdf5"
    s = convert_file(delta, out, show_progress=False)
    assert (s["num_demos"], s["delta_success"], s["abs_success_of_delta"]) == (2, 2, 2)
    assert s["max_eef_gap_m"] < 1e-3
    src, dst = check_robomimic_file(delta), check_robomimic_file(out, abs_action=True, action_dim=7)
    assert dst["generated"]["action_space"] == "absolute" and src["generated"]["action_space"] == "delta"
    assert dst["generated"]["conversion"]["abs_success_of_delta"] == 2
    assert dst["generated"]["task"] == "lift" and dst["converted"] is None
    assert dst["masks"] == src["masks"] and dst["num_samples"] == src["num_samples"]


def test_replays_of_generated_demos_use_the_generators_posture(tmp_path):
    """zprl's generator records with each arm's noiseless init_qpos as the OSC null-space posture; a
    replay must start its controllers the same way to retrace the recorded states (with the joints the
    env reset to, as for robosuite's own recordings, it drifts from the first step: transport's long
    hand-overs then failed 77 of 100 open-loop checks)."""
    from zprl.data.generate_demos import generate_demos

    delta = tmp_path / "delta.hdf5"
    generate_demos("lift", 1, "expert", "low_dim", seed=0, output=str(delta), show_progress=False)
    assert check_robomimic_file(delta)["is_generated"]
    with h5py.File(delta, "r") as f:
        env = make_replay_env(json.loads(f["data"].attrs["env_args"]), abs_action=False)
        states, actions = f["data/demo_0/states"][()], f["data/demo_0/actions"][()]
        model = f["data/demo_0"].attrs["model_file"]
    env.reset_to({"model": model, "states": states[0]})
    gaps = {}
    for posture in (True, False):
        replay(env, states[0], actions[:20], None, init_qpos_posture=posture)
        gaps[posture] = np.abs(np.array(env.env.sim.get_state().flatten()) - states[20]).max()
    assert gaps[True] < 1e-6 < 1e-4 < gaps[False]


@pytest.mark.slow
def test_parallel_workers_write_the_same_actions(lift_delta, lift_abs, tmp_path):
    out = tmp_path / "parallel.hdf5"
    s = convert_file(lift_delta["path"], out, show_progress=False, workers=2)
    assert (s["delta_success"], s["abs_success_of_delta"]) == (1, 1)
    with h5py.File(lift_abs["path"], "r") as one, h5py.File(out, "r") as two:
        for demo in ("demo_0", "demo_1"):
            np.testing.assert_array_equal(one["data"][demo]["actions"][()], two["data"][demo]["actions"][()])
