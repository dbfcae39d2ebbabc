"""Scripted-expert demonstrations: robomimic can read them, and replaying them succeeds."""

from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pytest

from zprl.common.errors import UserInputError, run_cli
from zprl.data.generate_demos import generate_demos, main, summary_line
from zprl.env.robomimic_env import LOW_DIM_KEYS, register_obs_modalities

NUM = 3


@pytest.fixture(scope="module")
def lift_file(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("demos") / "lift_mixed.hdf5")
    summary = generate_demos("lift", NUM, quality="mixed", obs="low_dim", seed=0, output=path, show_progress=False)
    return path, summary


def _demos(f):
    return sorted(f["data"].keys(), key=lambda s: int(s.split("_")[-1]))


def test_summary_matches_file(lift_file):
    path, s = lift_file
    assert s["output"] == os.path.abspath(path) and os.path.isfile(path)
    assert s["kept"] == NUM and s["successes"] == NUM and s["attempts"] >= NUM
    assert s["success_rate"] == pytest.approx(NUM / s["attempts"])
    assert sum(s["tiers"].values()) == NUM and set(s["tiers"]) <= {"better", "okay", "worse"}
    # no temp files left behind
    assert [n for n in os.listdir(os.path.dirname(path)) if n.startswith(".tmp_")] == []
    with h5py.File(path, "r") as f:
        lengths = [f["data"][d].attrs["num_samples"] for d in _demos(f)]
    assert s["mean_length"] == pytest.approx(np.mean(lengths))
    line = summary_line(s)
    assert line.startswith(f"lift mixed low_dim: expert success {NUM}/{s['attempts']}") and line.endswith(path)


def test_robomimic_reads_metadata_and_shapes(lift_file):
    path, _ = lift_file
    import robomimic.utils.file_utils as FileUtils

    meta = FileUtils.get_env_metadata_from_dataset(path)
    assert meta["env_name"] == "Lift" and meta["type"] == 1
    assert meta["env_kwargs"]["controller_configs"]["type"] == "OSC_POSE"
    assert meta["env_kwargs"]["controller_configs"]["control_delta"] is True
    assert meta["env_kwargs"]["control_freq"] == 20
    register_obs_modalities(LOW_DIM_KEYS)
    shapes = FileUtils.get_shape_metadata_from_dataset(path, all_obs_keys=LOW_DIM_KEYS)
    assert shapes["ac_dim"] == 7 and shapes["use_images"] is False
    assert shapes["all_shapes"] == {"object": [10], "robot0_eef_pos": [3], "robot0_eef_quat": [4],
                                    "robot0_gripper_qpos": [2]}


def test_layout_masks_and_attrs(lift_file):
    path, _ = lift_file
    with h5py.File(path, "r") as f:
        data = f["data"]
        demos = _demos(f)
        assert demos == [f"demo_{i}" for i in range(NUM)]
        assert data.attrs["total"] == sum(int(data[d].attrs["num_samples"]) for d in demos)
        gen = json.loads(data.attrs["zprl_generated"])
        assert gen["task"] == "lift" and gen["quality"] == "mixed" and gen["seed"] == 0
        assert gen["obs"] == "low_dim" and gen["action_space"] == "delta" and gen["generator"]
        for d in demos:
            g = data[d]
            n = int(g.attrs["num_samples"])
            assert g["actions"].shape == (n, 7) and g["actions"].dtype == np.float32
            acts = g["actions"][()]
            assert np.all(np.abs(acts) <= 1.0) and np.all(np.isin(acts[:, 6], [-1.0, 1.0]))
            assert g["states"].shape[0] == n and g["rewards"].shape == (n,)
            dones = g["dones"][()]
            assert dones[-1] == 1 and dones.sum() == 1
            assert g["rewards"][-1] == 1.0  # ends just after success, still successful
            assert "<mujoco" in g.attrs["model_file"]
            for k in LOW_DIM_KEYS:
                o, no = g["obs"][k][()], g["next_obs"][k][()]
                assert o.shape[0] == n and no.shape == o.shape
                np.testing.assert_array_equal(o[1:], no[:-1])
        masks = {k: sorted(v.decode() for v in f["mask"][k][()]) for k in f["mask"]}
        assert f["mask"]["train"].dtype.kind == "S"
        assert set(masks) == {"train", "valid", "better", "okay", "worse"}
        assert sorted(masks["train"] + masks["valid"]) == demos and len(masks["valid"]) == 1
        assert sorted(masks["better"] + masks["okay"] + masks["worse"]) == demos


def test_replay_from_first_state_reproduces_success(lift_file):
    path, _ = lift_file
    import robomimic.utils.env_utils as EnvUtils
    import robomimic.utils.file_utils as FileUtils

    meta = FileUtils.get_env_metadata_from_dataset(path)
    register_obs_modalities(LOW_DIM_KEYS)
    env = EnvUtils.create_env_from_metadata(env_meta=meta, render=False, render_offscreen=False, use_image_obs=False)
    with h5py.File(path, "r") as f:
        for d in _demos(f):
            g = f["data"][d]
            states, actions = g["states"][()], g["actions"][()]
            # robomimic's own replay: reset to the first state with the stored model, then act
            env.reset_to({"states": states[0], "model": g.attrs["model_file"]})
            for a in actions:
                env.step(a)
            assert env.is_success()["task"], f"{d} did not succeed on replay"

        # reset_to leaves each controller's cached end-effector pose at the reset it sampled (so the
        # first goal is off by up to ~1 cm, enough to change contact-rich episodes); refreshed, and
        # with the null-space target the generator uses, the trajectory itself repeats.
        g = f["data/demo_0"]
        states, actions = g["states"][()], g["actions"][()]
        env.reset()
        env.reset_to({"states": states[0]})
        for robot in env.env.robots:
            robot.controller.update(force=True)
            robot.controller.update_initial_joints(robot.init_qpos)
        for t, a in enumerate(actions):
            np.testing.assert_allclose(env.env.sim.get_state().flatten(), states[t], atol=1e-4)
            env.step(a)
        assert env.is_success()["task"]


def _contents(path):
    """Every dataset and attribute, except model_file: robosuite writes mesh file paths into the
    first model a process compiles but not into later ones, so that XML text depends on history."""
    out = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            out[name + "@attrs"] = {k: v for k, v in obj.attrs.items() if k != "model_file"}
            if isinstance(obj, h5py.Dataset):
                out[name] = obj[()]
        f.visititems(visit)
    return out


def test_same_seed_same_contents(lift_file, tmp_path):
    path, _ = lift_file
    again = str(tmp_path / "again.hdf5")
    generate_demos("lift", NUM, quality="mixed", obs="low_dim", seed=0, output=again, show_progress=False)
    a, b = _contents(path), _contents(again)
    assert a.keys() == b.keys()
    for key in a:
        if key.endswith("@attrs"):
            assert a[key] == b[key], key
        else:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    other = str(tmp_path / "other_seed.hdf5")
    generate_demos("lift", 1, quality="expert", obs="low_dim", seed=5, output=other, show_progress=False)
    with h5py.File(path, "r") as f, h5py.File(other, "r") as g:
        assert not np.array_equal(f["data/demo_0/states"][0], g["data/demo_0/states"][0])


def _cli_error(capsys, argv):
    with pytest.raises(SystemExit) as exc:
        run_cli(main, argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    return err[0]


def test_bad_cli_input_one_line_nothing_written(lift_file, tmp_path, capsys):
    out = tmp_path / "x.hdf5"
    line = _cli_error(capsys, ["--task", "stack", "--num-demos", "2", "--output", str(out)])
    assert "stack" in line and "lift" in line
    line = _cli_error(capsys, ["--task", "lift", "--num-demos", "0", "--output", str(out)])
    assert "--num-demos 0" in line
    line = _cli_error(capsys, ["--task", "lift", "--num-demos", "2", "--quality", "great", "--output", str(out)])
    assert "great" in line
    assert os.listdir(tmp_path) == []
    # an existing file is refused and left untouched
    path, _ = lift_file
    before = os.path.getmtime(path), os.path.getsize(path)
    line = _cli_error(capsys, ["--task", "lift", "--num-demos", "1", "--output", path])
    assert path in line and "--overwrite" in line
    assert (os.path.getmtime(path), os.path.getsize(path)) == before
    with pytest.raises(UserInputError):
        generate_demos("lift", 1, output=str(tmp_path), show_progress=False)


def test_image_demo_layout(tmp_path):
    path = str(tmp_path / "lift_image.hdf5")
    s = generate_demos("lift", 1, quality="expert", obs="image", image_size=84, seed=1, output=path,
                       show_progress=False)
    assert s["kept"] == 1 and s["tiers"] == {}
    with h5py.File(path, "r") as f:
        g = f["data/demo_0"]
        n = int(g.attrs["num_samples"])
        for cam in ("agentview", "robot0_eye_in_hand"):
            ds = g["obs"][f"{cam}_image"]
            assert ds.shape == (n, 84, 84, 3) and ds.dtype == np.uint8
            assert ds.compression == "gzip" and ds.chunks == (1, 84, 84, 3)
            img = ds[0]
            assert img.std() > 5  # a rendered scene, not a blank frame
            np.testing.assert_array_equal(g["next_obs"][f"{cam}_image"][0], ds[1])
        # robomimic's env flips the renderer's bottom-up rows: in the agentview image the floor
        # and table (bright) are at the bottom, the darker background above
        top, bottom = g["obs"]["agentview_image"][0][:20].mean(), g["obs"]["agentview_image"][0][-20:].mean()
        assert bottom != top
        assert set(f["mask"].keys()) == {"train", "valid"}


@pytest.mark.slow
def test_transport_demo_has_both_arms(tmp_path):
    path = str(tmp_path / "transport.hdf5")
    s = generate_demos("transport", 1, quality="expert", obs="low_dim", seed=0, output=path, show_progress=False)
    assert s["kept"] == 1 and s["successes"] >= 1
    with h5py.File(path, "r") as f:
        g = f["data/demo_0"]
        n = int(g.attrs["num_samples"])
        assert g["actions"].shape == (n, 14) and n <= 700
        for key in ("robot0_eef_pos", "robot1_eef_pos", "robot1_gripper_qpos", "object"):
            assert g["obs"][key].shape[0] == n
        env_args = json.loads(f["data"].attrs["env_args"])
        assert env_args["env_name"] == "TwoArmTransport"
        assert env_args["env_kwargs"]["env_configuration"] == "single-arm-opposed"
        # both grippers opened and closed
        for arm in (0, 1):
            assert set(np.unique(g["actions"][:, 7 * arm + 6])) == {-1.0, 1.0}
