"""zprl.data.port on files made the way robosuite's and robomimic's own tools make them.

The source files come from robosuite 1.4.1's own pieces: a scripted expert drives an env wrapped
in robosuite's ``DataCollectionWrapper`` (as ``collect_human_demonstrations.py`` does with a person
at the keyboard) and ``gather_demonstrations_as_hdf5`` writes ``demo.hdf5``; robomimic's
``convert_robosuite.py`` and ``dataset_states_to_obs.py`` then run on it unchanged. "Another
robosuite version" is simulated on that demo.hdf5 (see ``as_other_version`` and docs/data.md).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import types
import xml.etree.ElementTree as ET

import h5py
import numpy as np
import pytest

from zprl.common.errors import UserInputError
from zprl.data import port as P

NUM_DEMOS = 2
OTHER_INSTALL = "/home/alice/miniconda3/envs/rs13/lib/python3.7/site-packages/robosuite"
ELSEWHERE = "/opt/sim_assets"  # no 'robosuite' folder in the path: robosuite's own path fix cannot map it


# --------------------------------------------------------------------------- making source files


def _collect_module():
    """robosuite's collect_human_demonstrations module. Its top-level import of the keyboard/
    SpaceMouse input helpers needs an X display (pynput); the functions used here never touch them."""
    try:
        import robosuite.scripts.collect_human_demonstrations as chd

        return chd
    except Exception:
        pass
    saved = sys.modules.get("robosuite.utils.input_utils")
    sys.modules["robosuite.utils.input_utils"] = types.SimpleNamespace(input2action=None)
    try:
        sys.modules.pop("robosuite.scripts.collect_human_demonstrations", None)
        import robosuite.scripts.collect_human_demonstrations as chd
    finally:
        if saved is None:
            sys.modules.pop("robosuite.utils.input_utils", None)
        else:
            sys.modules["robosuite.utils.input_utils"] = saved
    return chd


def collect_robosuite_demos(out_dir, task="lift", env_name="Lift", num_demos=NUM_DEMOS, seed=0, max_steps=400):
    """demo.hdf5 as robosuite's collect_human_demonstrations.py writes it, a scripted expert at the controls.

    Same env settings and success rule (10 steps held after success) as the script; only
    successful episodes are kept by robosuite's own gather function.
    """
    import robosuite as suite
    from robosuite.wrappers import DataCollectionWrapper

    from zprl.data.experts import make_expert

    chd = _collect_module()
    controller_config = suite.load_controller_config(default_controller="OSC_POSE")
    config = {"env_name": env_name, "robots": "Panda", "controller_configs": controller_config}
    env = suite.make(**config, has_renderer=False, has_offscreen_renderer=False, ignore_done=True,
                     use_camera_obs=False, reward_shaping=True, control_freq=20)
    raw_dir = os.path.join(out_dir, "raw")
    env = DataCollectionWrapper(env, raw_dir)
    kept = attempt = 0
    while kept < num_demos:
        assert attempt < 3 * num_demos + 3, "the scripted expert keeps failing"
        np.random.seed(seed * 1000 + attempt)  # robosuite draws the cube size and placement from np.random
        env.reset()
        expert = make_expert(task, env, np.random.default_rng(seed * 1000 + attempt))
        attempt += 1
        hold = -1
        for _ in range(max_steps):
            env.step(expert.act())
            if hold == 0:
                break
            hold = (hold - 1 if hold > 0 else 10) if env._check_success() else -1
        kept += hold == 0
        env.close()  # flushes the episode, as the script's collect_human_trajectory does
    out = os.path.join(out_dir, "demos")
    os.makedirs(out)
    chd.gather_demonstrations_as_hdf5(raw_dir, out, json.dumps(config))
    shutil.rmtree(raw_dir)
    return os.path.join(out, "demo.hdf5")


def run_robomimic_script(module, *argv):
    """Run one of robomimic's scripts unchanged, in this process (robomimic 0.3.0 needs the
    mujoco_py stand-in zprl registers)."""
    import runpy

    from zprl.env.robomimic_env import ensure_robomimic_importable

    ensure_robomimic_importable()
    saved = sys.argv
    sys.argv = [module, *map(str, argv)]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    finally:
        sys.argv = saved


def robosuite_files(tmp_path_factory) -> dict:
    """raw demo.hdf5, its convert_robosuite.py copy (states + actions, no obs) and robomimic's
    dataset_states_to_obs.py low-dim file; made once per test session."""
    root = tmp_path_factory.getbasetemp() / "robosuite_lift"
    files = {"raw": root / "demos" / "demo.hdf5", "converted": root / "demos" / "converted.hdf5",
             "low_dim": root / "demos" / "low_dim.hdf5"}
    if not (root / "done").exists():
        if root.exists():
            shutil.rmtree(root)
        root.mkdir()
        collect_robosuite_demos(str(root))
        shutil.copy(files["raw"], files["converted"])
        run_robomimic_script("robomimic.scripts.conversion.convert_robosuite", "--dataset", files["converted"])
        run_robomimic_script("robomimic.scripts.dataset_states_to_obs", "--dataset", files["converted"],
                             "--output_name", "low_dim.hdf5", "--done_mode", 2)
        (root / "done").write_text("ok")
    return {k: str(v) for k, v in files.items()}


def _install_dir():
    import robosuite

    return os.path.dirname(robosuite.__file__)


def as_other_version(src, dst, *, version="1.3.0", assets="other_install", controller="v13", permute=True,
                     extra_kwargs=None, rename_joint=None):
    """A copy of robosuite's demo.hdf5 that looks recorded with another robosuite 1.x.

    assets: "other_install" (asset paths under another machine's site-packages/robosuite) or
      "elsewhere" (under a folder robosuite's own path fix cannot map).
    controller: "v13" (robosuite <= 1.3's damping / damping_limits keys) or "v15" (robosuite 1.5's
      composite BASIC layout with body_parts), or None.
    permute: the cube body first in worldbody, so its free joint leads qpos and qvel (states
      rewritten to match), i.e. the same joints in another order.
    extra_kwargs: env_info keys this robosuite's Lift does not take.
    rename_joint: (demo, old, new) renames one joint in one demo's XML (a scene this version lacks).
    """
    import mujoco

    shutil.copy(src, dst)
    here = _install_dir()
    with h5py.File(dst, "a") as f:
        data = f["data"]
        data.attrs["repository_version"] = version
        info = json.loads(data.attrs["env_info"])
        ctrl = info["controller_configs"]
        if controller == "v13":
            ctrl["damping"] = ctrl.pop("damping_ratio")
            ctrl["damping_limits"] = ctrl.pop("damping_ratio_limits")
        elif controller == "v15":
            info["controller_configs"] = {"type": "BASIC",
                                          "body_parts": {"right": {**ctrl, "gripper": {"type": "GRIP"}}}}
        info.update(extra_kwargs or {})
        data.attrs["env_info"] = json.dumps(info)
        for name in data:
            g = data[name]
            xml = g.attrs["model_file"]
            if permute:
                root = ET.fromstring(xml)
                wb = root.find("worldbody")
                cube = next(b for b in wb if b.get("name") == "cube_main")
                wb.remove(cube)
                wb.insert(0, cube)
                permuted = ET.tostring(root, encoding="unicode")
                # the states in the permuted model's joint order, addresses from mujoco itself
                old_m, new_m = mujoco.MjModel.from_xml_string(xml), mujoco.MjModel.from_xml_string(permuted)
                s = g["states"][()]
                q_old, v_old = s[:, 1:1 + old_m.nq], s[:, 1 + old_m.nq:]
                q_new, v_new = np.zeros_like(q_old), np.zeros_like(v_old)
                for j in range(old_m.njnt):
                    jn = new_m.joint(old_m.joint(j).name).id
                    nq, nv = {0: (7, 6), 1: (4, 3)}.get(int(old_m.jnt_type[j]), (1, 1))
                    qa, va = old_m.jnt_qposadr[j], old_m.jnt_dofadr[j]
                    qb, vb = new_m.jnt_qposadr[jn], new_m.jnt_dofadr[jn]
                    q_new[:, qb:qb + nq], v_new[:, vb:vb + nv] = q_old[:, qa:qa + nq], v_old[:, va:va + nv]
                assert not np.array_equal(q_new, q_old)
                del g["states"]
                g.create_dataset("states", data=np.concatenate([s[:, :1], q_new, v_new], axis=1))
                xml = permuted
            if rename_joint and rename_joint[0] == name:
                xml = xml.replace(f'"{rename_joint[1]}"', f'"{rename_joint[2]}"')  # the joint and what refers to it
            if assets == "other_install":
                xml = xml.replace(here, OTHER_INSTALL)
            elif assets == "elsewhere":
                xml = xml.replace(here + "/models/assets", ELSEWHERE)
            g.attrs["model_file"] = xml
    return dst


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return robosuite_files(tmp_path_factory)


@pytest.fixture(scope="module")
def ported_same(files, tmp_path_factory):
    """convert_robosuite.py's output (states + actions only) ported, with the replay check."""
    out = str(tmp_path_factory.mktemp("port_same") / "ported.hdf5")
    summary = P.port_file(files["converted"], out, show_progress=False)
    return out, summary


def _read(path):
    with h5py.File(path, "r") as f:
        out = {}
        for d in f["data"]:
            g = f["data"][d]
            out[d] = {"states": g["states"][()], "actions": g["actions"][()], "model": g.attrs["model_file"],
                      "obs": {k: g["obs"][k][()] for k in g["obs"]} if "obs" in g else {},
                      "next_obs": {k: g["next_obs"][k][()] for k in g["next_obs"]} if "next_obs" in g else {}}
        masks = {k: [m.decode() for m in f["mask"][k][()]] for k in f["mask"]} if "mask" in f else {}
        return out, json.loads(f["data"].attrs["env_args"]), masks


def _cube_size(xml):
    return re.search(r'<geom[^>]*name="cube_g0"[^>]*>', xml).group(0).split('size="')[1].split('"')[0]


# --------------------------------------------------------------------------- tests


def test_port_matches_robomimic_dataset_states_to_obs(files, ported_same):
    """Same-version file: port's observations are robomimic's own, each demo keeps its cube,
    actions become absolute and replay to success, and zprl's dataset reads the result."""
    out, summary = ported_same
    ported, meta, masks = _read(out)
    source, _, source_masks = _read(files["converted"])
    robomimic, _, _ = _read(files["low_dim"])
    assert sorted(ported) == sorted(source) and len(ported) == NUM_DEMOS
    assert masks == source_masks  # filter keys made by convert_robosuite.py survive
    sizes = set()
    for d in ported:
        np.testing.assert_array_equal(ported[d]["states"], source[d]["states"])
        assert set(robomimic[d]["obs"]) <= set(ported[d]["obs"])
        for k, v in robomimic[d]["obs"].items():
            np.testing.assert_allclose(ported[d]["obs"][k], v, atol=1e-6, err_msg=f"{d} obs/{k}")
            np.testing.assert_allclose(ported[d]["next_obs"][k], robomimic[d]["next_obs"][k], atol=1e-6)
        assert _cube_size(ported[d]["model"]) == _cube_size(source[d]["model"])
        sizes.add(_cube_size(source[d]["model"]))
        # absolute actions: world-frame eef goal (z above the 0.8 m table), gripper kept as recorded
        assert ported[d]["actions"].shape == source[d]["actions"].shape
        assert np.all(ported[d]["actions"][:, 2] > 0.8)
        np.testing.assert_array_equal(ported[d]["actions"][:, 6], source[d]["actions"][:, 6])
    assert len(sizes) == NUM_DEMOS  # the demos really had different cubes
    assert meta["env_kwargs"]["controller_configs"]["control_delta"] is False
    assert "env_name" not in meta["env_kwargs"]
    assert summary["delta_success"] == NUM_DEMOS and summary["abs_success_of_delta"] == NUM_DEMOS
    assert summary["same_layout"] == NUM_DEMOS and summary["max_body_gap_m"] < 1e-6

    from omegaconf import OmegaConf

    from zprl.common.config import CONFIG_DIR
    from zprl.data.robomimic_dataset import RobomimicReplayDataset

    shape_meta = OmegaConf.to_container(OmegaConf.load(os.path.join(CONFIG_DIR, "task", "lift_lowdim_abs.yaml")).shape_meta)
    ds = RobomimicReplayDataset(shape_meta, out, horizon=8, use_cache=False)
    batch = ds[0]
    assert batch["action"].shape == (8, 10) and batch["obs"]["object"].shape == (1, 10)


def test_port_undoes_another_versions_file(files, ported_same, tmp_path):
    """A demo.hdf5 that looks recorded with robosuite 1.3 on another machine (asset paths robosuite's
    path fix cannot map, damping/damping_limits, a Lift keyword 1.4.1 lacks, the same joints in
    another order), put through robomimic's convert_robosuite.py: robomimic's own reset_to cannot
    load its XML here, port gives back the same-version file's states, observations and actions."""
    from zprl.data.check import unresolved_assets

    other = as_other_version(files["raw"], str(tmp_path / "demo.hdf5"), assets="elsewhere",
                             extra_kwargs={"lite_physics": False})
    run_robomimic_script("robomimic.scripts.conversion.convert_robosuite", "--dataset", other)
    with h5py.File(other, "r") as f:
        assert unresolved_assets(f["data/demo_1"].attrs["model_file"], "Lift") is None  # robosuite's fix raises
    from zprl.data.convert_abs import convert_file

    with pytest.raises(UserInputError, match="env_kwargs holds env_name.*python -m zprl.data.port --input IN"):
        convert_file(other, str(tmp_path / "abs.hdf5"), show_progress=False)
    out = str(tmp_path / "ported.hdf5")
    summary = P.port_file(other, out, check=False, show_progress=False)
    assert summary["source_versions"]["repository"] == "1.3.0"
    changes = " | ".join(summary["env_changes"])
    assert "damping -> damping_ratio" in changes and "damping_limits -> damping_ratio_limits" in changes
    assert "dropped lite_physics" in changes and "dropped env_name" in changes
    assert summary["same_layout"] == 0 and summary["max_body_gap_m"] < 1e-6
    ported, meta, _ = _read(out)
    reference, ref_meta, _ = _read(ported_same[0])
    assert meta == ref_meta
    for d in reference:
        np.testing.assert_array_equal(ported[d]["states"], reference[d]["states"])
        np.testing.assert_allclose(ported[d]["actions"], reference[d]["actions"], atol=1e-9)
        for k, v in reference[d]["obs"].items():
            np.testing.assert_allclose(ported[d]["obs"][k], v, atol=1e-9, err_msg=f"{d} obs/{k}")
        assert _cube_size(ported[d]["model"]) == _cube_size(reference[d]["model"])
        assert ELSEWHERE not in ported[d]["model"]


def test_port_reads_robosuite_demo_hdf5_and_composite_controller(files, ported_same, tmp_path):
    """robosuite's raw demo.hdf5 (no env_args), with asset paths of another install and robosuite
    1.5's composite controller layout, ports without robomimic's conversion step."""
    other = as_other_version(files["raw"], str(tmp_path / "demo.hdf5"), version="1.5.1", assets="other_install",
                             controller="v15", permute=False)
    out = str(tmp_path / "ported.hdf5")
    summary = P.port_file(other, out, check=False, show_progress=False)
    assert summary["layout"] == "robosuite"
    assert any("composite layout (BASIC, body_parts.right)" in c for c in summary["env_changes"])
    ported, meta, masks = _read(out)
    reference, ref_meta, _ = _read(ported_same[0])
    assert meta == ref_meta and masks == {}
    for d in reference:
        np.testing.assert_allclose(ported[d]["actions"], reference[d]["actions"], atol=1e-9)
        np.testing.assert_allclose(ported[d]["obs"]["object"], reference[d]["obs"]["object"], atol=1e-9)


def test_port_refuses_with_one_line_before_writing(files, tmp_path, capsys):
    """Unportable input: one line naming the file, demo or key and why; nothing written; an existing
    output is never replaced without --overwrite; --skip-bad drops (and names) the bad demo."""
    bad = as_other_version(files["raw"], str(tmp_path / "renamed.hdf5"), permute=False,
                           rename_joint=("demo_2", "gripper0_finger_joint1", "gripper0_right_finger_joint1"))
    out = tmp_path / "out.hdf5"
    with pytest.raises(UserInputError) as err:
        P.port_file(bad, str(out), check=False, show_progress=False)
    msg = str(err.value)
    assert "\n" not in msg and "data/demo_2" in msg and "gripper0_finger_joint1" in msg and "nothing written" in msg
    assert not out.exists() and not list(tmp_path.glob(".out.hdf5.tmp-*"))

    summary = P.port_file(bad, str(out), check=False, skip_bad=True, show_progress=False)
    assert summary["demos"] == ["demo_1"] and list(summary["skipped"]) == ["demo_2"]
    lines = P.format_summary(summary)
    assert any(line.startswith("skipped demo_2:") and "gripper0_right_finger_joint1" in line for line in lines)

    before = out.read_bytes()
    with pytest.raises(UserInputError, match="exists; pass --overwrite"):
        P.port_file(bad, str(out), check=False, show_progress=False)
    assert out.read_bytes() == before

    # through the command line: exit status 2 and a single line on stderr
    with pytest.raises(SystemExit) as exit_info:
        P.run_cli(P.main, ["--input", str(tmp_path / "missing.hdf5"), "--output", str(tmp_path / "x.hdf5")])
    assert exit_info.value.code == 2
    err_lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err_lines) == 1 and "missing.hdf5 does not exist" in err_lines[0]


def _meta(ctrl=None, **kwargs):
    import robosuite

    base = robosuite.load_controller_config(default_controller="OSC_POSE")
    return {"env_name": "Lift", "type": 1, "env_kwargs": {"robots": ["Panda"], "controller_configs": ctrl or base,
                                                          **kwargs}}


def test_env_meta_translation_rules():
    """env_args of other versions: what is renamed, dropped or refused (one line naming the key)."""
    meta, changes = P.env_meta_for_this_version(_meta(control_freq=20, camera_segmentations=None), "f")
    assert changes == [] and meta == _meta(control_freq=20, camera_segmentations=None)

    old = _meta()["env_kwargs"]["controller_configs"]
    old = {("damping" if k == "damping_ratio" else k): v for k, v in old.items()}
    meta, changes = P.env_meta_for_this_version(_meta(old), "f")
    assert meta["env_kwargs"]["controller_configs"]["damping_ratio"] == 1 and len(changes) == 1

    with pytest.raises(UserInputError, match="controller type 'JOINT_VELOCITY'"):
        P.env_meta_for_this_version(_meta({"type": "JOINT_VELOCITY"}), "f")
    with pytest.raises(UserInputError, match="body parts"):
        P.env_meta_for_this_version(_meta({"type": "BASIC", "body_parts": {"right": old, "torso": {}}}), "f")
    no_ctrl = _meta()
    del no_ctrl["env_kwargs"]["controller_configs"]
    with pytest.raises(UserInputError, match="--controller OSC_POSE"):
        P.env_meta_for_this_version(no_ctrl, "f")
    meta, changes = P.env_meta_for_this_version(no_ctrl, "f", controller="OSC_POSE")
    assert meta["env_kwargs"]["controller_configs"]["type"] == "OSC_POSE"
    with pytest.raises(UserInputError, match="env 'LiftV2' does not exist"):
        P.env_meta_for_this_version({**_meta(), "env_name": "LiftV2"}, "f")
    with pytest.raises(UserInputError, match="robot 'Panda2'"):
        P.env_meta_for_this_version(_meta(robots="Panda2"), "f")


def test_action_kind_from_values():
    rng = np.random.default_rng(0)
    delta = np.clip(rng.normal(0, 0.4, (50, 7)), -1, 1)
    absolute = np.concatenate([rng.normal([0.1, 0, 1.0], 0.05, (50, 3)), np.tile([2.2, -2.2, 0.0], (50, 1)),
                               np.ones((50, 1))], axis=1)
    assert P.action_kind_from_values(delta, 1) == "delta"
    assert P.action_kind_from_values(absolute, 1) == "absolute"
    assert P.action_kind_from_values(np.concatenate([absolute, absolute], 1), 2) == "absolute"
    assert P.action_kind_from_values(delta * 3, 1) == "unclear"


@pytest.mark.slow
def test_port_reextracts_images_at_zprls_cameras_and_size(files, tmp_path):
    """robomimic's dataset_states_to_obs with one 128x128 camera, on a file with another install's
    asset paths: port renders zprl's two 84x84 cameras, the same pixels robomimic's script renders
    at 84x84 from the same states, and zprl's image dataset reads it."""
    from omegaconf import OmegaConf

    from zprl.common.config import CONFIG_DIR
    from zprl.data.check import inspect_file
    from zprl.data.robomimic_dataset import RobomimicReplayDataset

    other = as_other_version(files["raw"], str(tmp_path / "demo.hdf5"), assets="other_install")
    run_robomimic_script("robomimic.scripts.conversion.convert_robosuite", "--dataset", other)
    run_robomimic_script("robomimic.scripts.dataset_states_to_obs", "--dataset", other, "--output_name",
                         "image128.hdf5", "--done_mode", 2, "--camera_names", "agentview",
                         "--camera_height", 128, "--camera_width", 128)
    image128 = str(tmp_path / "image128.hdf5")
    before = inspect_file(image128)
    assert not before["ready"] and "--obs image" in before["fix"]
    out = str(tmp_path / "ported.hdf5")
    summary = P.port_file(image128, out, show_progress=False)
    assert summary["cameras"] == ["agentview", "robot0_eye_in_hand"] and summary["image_size"] == 84
    assert summary["abs_success"] == NUM_DEMOS
    after = inspect_file(out)
    assert "lift_image_abs" in after["ready"]

    # robomimic's own extraction at 84x84 from the same-version file, for the pixels
    shutil.copy(files["converted"], tmp_path / "same.hdf5")
    run_robomimic_script("robomimic.scripts.dataset_states_to_obs", "--dataset", tmp_path / "same.hdf5",
                         "--output_name", "image84.hdf5", "--done_mode", 2, "--camera_names", "agentview",
                         "robot0_eye_in_hand", "--camera_height", 84, "--camera_width", 84)
    ported, _, _ = _read(out)
    robomimic, _, _ = _read(str(tmp_path / "image84.hdf5"))
    for d in robomimic:
        for cam in ("agentview_image", "robot0_eye_in_hand_image"):
            a, b = ported[d]["obs"][cam], robomimic[d]["obs"][cam]
            assert a.shape == b.shape == (len(ported[d]["actions"]), 84, 84, 3) and a.dtype == np.uint8
            # measured: at most 0.06% of pixels differ (none by more than 1 level on the wrist camera)
            assert (a != b).mean() < 0.005, f"{d} {cam}: {100 * (a != b).mean():.2f}% of pixels differ"

    shape_meta = OmegaConf.to_container(OmegaConf.load(os.path.join(CONFIG_DIR, "task", "lift_image_abs.yaml")).shape_meta)
    ds = RobomimicReplayDataset(shape_meta, out, horizon=8, use_cache=False)
    batch = ds[0]
    assert batch["obs"]["agentview_image"].shape == (1, 3, 84, 84) and batch["action"].shape == (8, 10)


@pytest.mark.slow
def test_offline_training_runs_on_a_ported_file(files, tmp_path):
    """The ported file goes through zprl's offline workspace: dataset, training steps and rollouts
    in envs built from the ported env_args (a tiny debug run)."""
    from conftest import run_offline

    other = as_other_version(files["raw"], str(tmp_path / "demo.hdf5"), assets="elsewhere")
    out = str(tmp_path / "ported.hdf5")
    P.port_file(other, out, check=False, show_progress=False)
    run_offline(out, tmp_path / "run", **{"task.dataset.val_ratio": 0.5, "task.env_runner.n_envs": 1})
    assert os.path.exists(tmp_path / "run" / "checkpoints" / "latest.ckpt")
    records = [json.loads(line) for line in open(tmp_path / "run" / "logs.json.txt")]
    assert any("test_mean_score" in r for r in records)
