"""python -m zprl.data.check on files made with robosuite's and robomimic's own tools (see
test_data_port.py for how they are made) and on files that differ from them in one way each."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest
from test_data_port import as_other_version, robosuite_files, run_robomimic_script

from zprl.common.errors import run_cli
from zprl.data import check as C


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    out = robosuite_files(tmp_path_factory)
    from zprl.data.port import port_file

    ported = str(tmp_path_factory.mktemp("check_ported") / "ported.hdf5")
    port_file(out["converted"], ported, check=False, show_progress=False)
    return {**out, "ported": ported}


def run_check(path, capsys):
    """(exit status, printed lines) of the command line."""
    with pytest.raises(SystemExit) as exit_info:
        raise SystemExit(run_cli(C.main, [str(path)]))
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out.splitlines(), captured.err.splitlines()


def test_check_walks_the_robosuite_to_zprl_pipeline(files, capsys):
    """Each stage's file gets the right verdict and the one command that moves it on."""
    code, lines, _ = run_check(files["raw"], capsys)
    text = "\n".join(lines)
    assert code == 1 and len(lines) <= 10
    assert "robosuite demo.hdf5 (collect_human_demonstrations layout)" in lines[0]
    assert "env: Lift (zprl task lift), robots Panda; collected with robosuite 1.4.1" in text
    assert "demos: 2, " in text and "filter keys: none" in text
    assert "observations: none (states and actions only)" in text
    assert "actions: 7-D delta OSC_POSE for 1 arm(s) (env_args control_delta=true" in text and "values agree" in text
    assert f"fix: python -m zprl.data.port --input {files['raw']} --output " in text
    assert "(then task=lift_lowdim_abs)" in text

    code, lines, _ = run_check(files["converted"], capsys)
    text = "\n".join(lines)
    assert code == 1 and "filter keys: train (2), valid (0)" in text
    assert "env_args: needs changes for robosuite 1.4.1: env_kwargs: dropped env_name" in text
    assert f"fix: python -m zprl.data.port --input {files['converted']}" in text

    code, lines, _ = run_check(files["low_dim"], capsys)
    text = "\n".join(lines)
    assert code == 1 and "object 10, robot0_eef_pos 3, robot0_eef_quat 4" in text
    assert "env_args: builds in robosuite 1.4.1 as it is" in text
    assert "zprl: not ready as it is: delta actions" in text
    assert f"fix: python -m zprl.data.convert_abs --input {files['low_dim']} --output " in text

    code, lines, _ = run_check(files["ported"], capsys)
    text = "\n".join(lines)
    assert code == 0 and "actions: 7-D absolute OSC_POSE" in text and "values agree" in text
    assert ("zprl: ready for task=lift_lowdim_abs (uses robot0_eef_pos, robot0_eef_quat, robot0_gripper_qpos, "
            "object)") in text
    assert (f"python train.py --config-name=train_flow_match_vib_unet_image_workspace task=lift_lowdim_abs "
            f"task.dataset_path={files['ported']}") in text


def test_check_reports_another_versions_file(files, tmp_path, capsys):
    other = as_other_version(files["raw"], str(tmp_path / "demo.hdf5"), assets="elsewhere", permute=False)
    run_robomimic_script("robomimic.scripts.conversion.convert_robosuite", "--dataset", other)
    code, lines, _ = run_check(other, capsys)
    text = "\n".join(lines)
    assert code == 1
    assert "collected with robosuite 1.3.0 (data.attrs repository_version); env_args env_version 1.3.0" in text
    assert "controller_configs: damping -> damping_ratio (robosuite <= 1.3 name)" in text
    assert "demo_1's asset paths cannot be mapped to this install by robosuite's path fix" in text
    assert f"fix: python -m zprl.data.port --input {other}" in text


def test_check_flags_actions_that_contradict_env_args(files, tmp_path, capsys):
    bad = tmp_path / "says_delta.hdf5"
    shutil.copy(files["ported"], bad)
    with h5py.File(bad, "a") as f:
        meta = json.loads(f["data"].attrs["env_args"])
        meta["env_kwargs"]["controller_configs"]["control_delta"] = True
        f["data"].attrs["env_args"] = json.dumps(meta)
    code, lines, _ = run_check(bad, capsys)
    assert code == 1
    assert any(line.startswith("zprl: cannot train on it: env_args says delta actions but the values look absolute")
               for line in lines)


def test_check_names_missing_and_wrongly_sized_cameras(files, tmp_path, capsys):
    """A file with a 128x128 agentview and no wrist camera: the image config's needs, and port --obs image."""
    odd = tmp_path / "cams.hdf5"
    shutil.copy(files["ported"], odd)
    with h5py.File(odd, "a") as f:
        for d in f["data"]:
            n = f["data"][d]["actions"].shape[0]
            f["data"][d]["obs"].create_dataset("agentview_image", data=np.zeros((n, 128, 128, 3), np.uint8))
    code, lines, _ = run_check(odd, capsys)
    text = "\n".join(lines)
    assert code == 1 and "agentview_image 128x128x3" in text
    assert "lift_image_abs needs: agentview_image is 128x128x3, needs 84x84x3, no robot0_eye_in_hand_image" in text
    assert f"fix: python -m zprl.data.port --input {odd} --output " in text and "--obs image" in text
    assert "(then task=lift_image_abs)" in text


def test_check_refuses_a_non_robomimic_file_with_one_line(tmp_path, capsys):
    junk = tmp_path / "notes.hdf5"
    junk.write_text("not hdf5")
    code, lines, err = run_check(junk, capsys)
    assert code == 2 and lines == [] and len(err) == 1 and "notes.hdf5 is not an HDF5 file" in err[0]
    empty = tmp_path / "empty.hdf5"
    with h5py.File(empty, "w") as f:
        f.create_group("data")
    code, _, err = run_check(empty, capsys)
    assert code == 2 and len(err) == 1 and "neither 'env_args'" in err[0]


def test_check_accepts_robosuite_13_damping_keys_that_change_nothing(files, tmp_path, capsys):
    """robomimic's own v0.1-era env_args spell OSC damping as damping/damping_limits (robosuite <= 1.3);
    with damping 1 robosuite 1.4.1 builds the same controller, so only the actions need converting."""
    old = tmp_path / "low_dim_rs13.hdf5"
    shutil.copy(files["low_dim"], old)
    with h5py.File(old, "a") as f:
        meta = json.loads(f["data"].attrs["env_args"])
        ctrl = meta["env_kwargs"]["controller_configs"]
        ctrl["damping"], ctrl["damping_limits"] = ctrl.pop("damping_ratio"), ctrl.pop("damping_ratio_limits")
        f["data"].attrs["env_args"] = json.dumps(meta)
    code, lines, _ = run_check(old, capsys)
    text = "\n".join(lines)
    assert code == 1 and "env_args: builds as it is; port would tidy" in text
    assert "zprl: not ready as it is: delta actions" in text and "fix: python -m zprl.data.convert_abs" in text
