"""Bad input across the entry points (issue 11, item 6): each case fails in seconds with one line
that names the file, key or value and what to do, before anything is written, and whatever existed
is left as it was. train.py's own cases (a mistyped override, an unknown task, a run directory
reused without resume) go through the real command line; the rest call the code train.py,
eval_base.py, eval_sum.py, zprl.data.prepare and zprl.report run, in this process.

Dataset contents (missing file, not HDF5, not robomimic, obs key, action dimension, filter keys,
image shapes, ...) are also covered one by one at the dataset level in test_dataset.py.
"""

import hashlib
import os
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf

from conftest import (OFFLINE_CONFIG, ONLINE_CONFIG, compose_config, tiny_offline_overrides,
                      tiny_online_overrides)
from zprl.common.checkpoint import atomic_save, load_checkpoint
from zprl.common.errors import UserInputError, find_user_error
from zprl.data.paths import repo_root


def tree(root) -> dict:
    """Every file under root with its content hash: 'nothing that existed is changed'."""
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            out[os.path.relpath(path, root)] = hashlib.sha256(open(path, "rb").read()).hexdigest()
    return out


def refused(fn, *needles):
    """fn() raises a one-line UserInputError holding every needle; returns the message."""
    with pytest.raises(Exception) as err:
        fn()
    user_error = find_user_error(err.value)  # as train.py finds it (Hydra wraps what constructors raise)
    assert isinstance(user_error, UserInputError), f"not a user error: {err.value!r}"
    msg = str(user_error)
    assert "\n" not in msg, msg
    for needle in needles:
        assert needle in msg, f"{needle!r} not in: {msg}"
    return msg


def missing_device() -> str:
    return f"cuda:{torch.cuda.device_count()}" if torch.cuda.is_available() else "cuda:0"


def offline_run(dataset, out, **extra):
    from zprl.workspace.offline import OfflineWorkspace

    cfg = compose_config(OFFLINE_CONFIG, tiny_offline_overrides(dataset, **extra))
    OmegaConf.resolve(cfg)
    return lambda: OfflineWorkspace(cfg, output_dir=str(out)).run()


def online_run(base, out, **extra):
    from zprl.workspace.online import OnlineWorkspace

    cfg = compose_config(ONLINE_CONFIG, tiny_online_overrides(base, **extra))
    OmegaConf.resolve(cfg)
    return lambda: OnlineWorkspace(cfg, output_dir=str(out)).run()


# ---- train.py, offline workspace ----------------------------------------------------------------
def test_truncated_dataset(lift_lowdim_abs_file, tmp_path):
    cut = tmp_path / "cut.hdf5"
    data = open(lift_lowdim_abs_file, "rb").read()
    cut.write_bytes(data[: len(data) // 2])
    before = tree(tmp_path)
    refused(offline_run(str(cut), tmp_path / "run"), str(cut), "is it complete?")
    assert tree(tmp_path) == before


@pytest.mark.parametrize("override, needles", [
    ({"+task.shape_meta.obs.robot0_joint_pos": "{shape:[7],type:low_dim}"},
     ["obs key 'robot0_joint_pos'", "fix shape_meta.obs"]),
    ({"task.shape_meta.action.shape": "[20]"}, ["action dimension mismatch", "expected 14, found 7"]),
    ({"task.n_action_steps": 17}, ["n_action_steps = 17 exceeds horizon=16", "lower n_action_steps"]),
    ({"training.device": missing_device()}, [f"training.device={missing_device()}"]),
], ids=["obs_key", "action_dim", "n_action_steps", "device"])
def test_offline_config_that_does_not_fit(lift_lowdim_abs_file, tmp_path, override, needles):
    before = tree(tmp_path)
    refused(lambda: offline_run(lift_lowdim_abs_file, tmp_path / "run", **override)(), *needles)
    assert tree(tmp_path) == before and not (tmp_path / "run").exists()


# ---- train.py, online workspace -----------------------------------------------------------------
def test_base_checkpoint_missing_or_junk(tmp_path):
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"\x00not a checkpoint" * 64)
    before = tree(tmp_path)
    refused(online_run(str(tmp_path / "nope.ckpt"), tmp_path / "run"), "checkpoint not found", "nope.ckpt")
    refused(online_run(str(junk), tmp_path / "run"), "cannot read checkpoint", "junk.ckpt")
    assert tree(tmp_path) == before


def test_base_checkpoint_of_another_task(tiny_base_ckpt, tmp_path):
    refused(online_run(tiny_base_ckpt, tmp_path / "run", online_task="can_lowdim_abs"),
            "trained on lift_lowdim (robosuite Lift)", "online_task=can_lowdim runs PickPlaceCan")
    refused(online_run(tiny_base_ckpt, tmp_path / "run", online_task="lift_image_abs"),
            "uses low-dim observations", "_lowdim_abs")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("override, needles", [
    ({"online_task.n_action_steps": 17}, ["online_task.n_action_steps=17", "between 1 and 16"]),
    ({"training.device": "gpu"}, ["training.device='gpu' is not a torch device", "use cpu, cuda:N"]),
    ({"training.device": missing_device()}, [f"training.device={missing_device()}"]),
    ({"training.bootstrap": "always"}, ["training.bootstrap='always'", "'never' or 'truncation'"]),
    ({"training.env_groups": 3}, ["training.env_groups=3", "from 1 to online_task.n_envs (2)"]),
], ids=["n_action_steps", "device_name", "device_missing", "bootstrap", "env_groups"])
def test_online_config_that_does_not_fit(tiny_base_ckpt, tmp_path, override, needles):
    refused(lambda: online_run(tiny_base_ckpt, tmp_path / "run", **override)(), *needles)
    assert not (tmp_path / "run").exists()


def test_resuming_with_another_base_checkpoint(tiny_base_ckpt, tmp_path):
    """A run resumed with a base checkpoint other than its own (e.g. one with another latent size)."""
    from zprl.workspace.online import OnlineWorkspace

    cfg = compose_config(ONLINE_CONFIG, tiny_online_overrides(tiny_base_ckpt))
    OmegaConf.resolve(cfg)
    OnlineWorkspace(cfg, output_dir=str(tmp_path / "run")).save_checkpoint()
    other = load_checkpoint(tiny_base_ckpt)
    other["state"]["global_step"] += 1  # another training state of the same task
    atomic_save(other, str(tmp_path / "other.ckpt"))
    before = tree(tmp_path)
    refused(online_run(str(tmp_path / "other.ckpt"), tmp_path / "run", **{"training.resume": "true"}),
            "is not the base checkpoint this run started from", "pass the original online_task.base_ckpt")
    assert tree(tmp_path) == before


def test_run_dir_holding_a_run_without_resume(tiny_base_ckpt, tmp_path):
    """In-process (a workspace given the directory); train.py refuses it earlier, see below."""
    from zprl.workspace.online import OnlineWorkspace

    cfg = compose_config(ONLINE_CONFIG, tiny_online_overrides(tiny_base_ckpt))
    OmegaConf.resolve(cfg)
    OnlineWorkspace(cfg, output_dir=str(tmp_path)).save_checkpoint()
    before = tree(tmp_path)
    refused(online_run(tiny_base_ckpt, tmp_path), "already holds a run", "training.resume=True")
    assert tree(tmp_path) == before


# ---- train.py's command line ----------------------------------------------------------------------
def train_py(*args, run_dir):
    out = subprocess.run([sys.executable, os.path.join(repo_root(), "train.py"), *args, f"hydra.run.dir={run_dir}"],
                         env={**os.environ, "PYTHONPATH": repo_root()}, capture_output=True, text=True, timeout=120)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), out.stderr[-2000:]
    return lines[0]


@pytest.mark.parametrize("args, needles", [
    (["--config-name=train_flow_match_vib_unet_image_workspace", "training.sed=1"],
     ["training.sed=1", "has no key training.sed", "did you mean training.seed?"]),
    (["--config-name=train_flow_match_vib_unet_image_workspace", "task=lift_foo"],
     ["task=lift_foo", "config/task/lift_foo.yaml", "lift_lowdim_abs"]),
    (["--config-name=train_online_vib_robomimic_workspace", "online_task=lift", "online_task.base_ckpt=x.ckpt"],
     ["online_task=lift", "choose one of", "lift_lowdim_abs"]),
], ids=["override_typo", "unknown_task", "unknown_online_task"])
def test_train_py_command_line_that_does_not_compose(tmp_path, args, needles):
    line = train_py(*args, run_dir=tmp_path / "run")
    for needle in needles:
        assert needle in line, line
    assert not (tmp_path / "run").exists()


def test_train_py_run_dir_holding_a_run_without_resume(tmp_path):
    """Refused before Hydra starts, so the run's own .hydra/ files are not overwritten."""
    run = tmp_path / "run"
    for name, text in {"checkpoints/latest.ckpt": "ckpt", ".hydra/config.yaml": "seed: 3\n", "logs.json.txt": "{}\n"}.items():
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text(text)
    before = tree(tmp_path)
    line = train_py("--config-name=train_flow_match_vib_unet_image_workspace", "training.seed=4", run_dir=run)
    assert f"{run} already holds a run" in line and "training.resume=True" in line
    assert tree(tmp_path) == before


# ---- eval_base.py, eval_sum.py, zprl.data.prepare, zprl.report ------------------------------------
def test_eval_entry_points(tiny_base_ckpt, tmp_path):
    import eval_base
    import eval_sum

    out = str(tmp_path / "eval")
    refused(lambda: eval_base.main(["-c", tiny_base_ckpt, "-o", out, "-d", missing_device()]),
            f"-d={missing_device()}")
    refused(lambda: eval_base.main(["-c", tiny_base_ckpt, "-o", out, "-d", "cpu", "-t", "17"]),
            "-t 17", "between 1 and 16")
    refused(lambda: eval_base.main(["-c", tiny_base_ckpt, "-o", out, "-d", "cpu", "--noise_scale", "-1"]),
            "--noise_scale -1.0", "must be >= 0")
    refused(lambda: eval_sum.main(["-c", tiny_base_ckpt, "-o", out, "-d", "cpu"]),
            "is not an online checkpoint", "eval_base.py")
    assert not os.path.exists(out)


def test_data_and_report_entry_points(tmp_path, capsys):
    from zprl.common.errors import run_cli
    from zprl.data import prepare
    from zprl.demo import main as demo_main
    from zprl.report import main as report_main

    for main, argv, needle in [(demo_main, ["--fast", "--device", "cuda:7", "--out", str(tmp_path / "demo")],
                                "--device=cuda:7"),
                               (prepare.main, ["--task", "lift", "--obs", "low_dim", "--num-demos", "0"],
                                "--num-demos 0 must be at least 1"),
                               (report_main, [str(tmp_path / "no_run"), "-o", str(tmp_path / "r")],
                                "run directory not found")]:
        with pytest.raises(SystemExit) as exit_:
            run_cli(main, argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert exit_.value.code == 2 and len(err) == 1 and needle in err[0], err
    assert os.listdir(tmp_path) == []
