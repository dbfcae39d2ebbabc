"""Sweeps: the multirun configs (config/sweep/), the SLURM / local launcher configs
(config/hydra/launcher/), and one real sweep through submitit's local launcher (slow)."""

import glob
import json
import os
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from conftest import ONLINE_CONFIG, tiny_online_overrides


def compose_with_hydra(overrides):
    from hydra import compose, initialize_config_dir

    from zprl.common.config import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        return compose(config_name=ONLINE_CONFIG, overrides=list(overrides), return_hydra_config=True)


def test_steering_seeds_sweep_grid_and_run_naming():
    cfg = compose_with_hydra(["+sweep=steering_seeds", "online_task=lift_lowdim_abs"])
    assert dict(cfg.hydra.sweeper.params) == {"steering": "zprl,action_residual,noise,embedding_residual",
                                              "training.seed": "0,1,2"}
    assert cfg.exp_name == "steering_seeds" and cfg.logging.group == "steering_seeds_lift_lowdim"
    # the W&B name names the job (jobs of a local sweep start in the same second: no time stamp)
    assert OmegaConf.to_container(cfg.logging)["name"] == \
        "${exp_name}_${task_name}_${hydra:runtime.choices.steering}_seed${training.seed}"
    assert OmegaConf.to_container(cfg.hydra.sweep)["subdir"] == "${hydra.job.num}"  # the report expands numbered runs


def test_tasks_sweep_reads_each_task_base_from_zprl_bases(monkeypatch):
    monkeypatch.setenv("ZPRL_BASES", "/bases")
    cfg = compose_with_hydra(["+sweep=tasks_steering_seeds", "online_task=square_image_abs"])
    assert cfg.hydra.sweeper.params.online_task == "can_image_abs,square_image_abs,transport_image_abs,tool_hang_image_abs"
    assert cfg.online_task.base_ckpt == "/bases/square_image.ckpt"
    assert OmegaConf.to_container(cfg.hydra.sweep)["subdir"] == "${online_task.name}/${hydra.job.num}"
    # a command-line base still wins (one task, one base)
    cfg = compose_with_hydra(["+sweep=tasks_steering_seeds", "online_task.base_ckpt=/x.ckpt"])
    assert cfg.online_task.base_ckpt == "/x.ckpt"


def test_slurm_launcher_config_carries_partition_gpus_time_parallelism():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    cfg = compose_with_hydra(["hydra/launcher=zprl_slurm", "hydra.launcher.partition=gpu",
                              "hydra.launcher.timeout_min=600", "hydra.launcher.array_parallelism=4"])
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.partition, launcher.gpus_per_node, launcher.timeout_min, launcher.array_parallelism) == \
        ("gpu", 1, 600, 4)
    assert launcher.cpus_per_task == 24 and launcher.mem_gb == 96
    local = compose_with_hydra(["hydra/launcher=zprl_local"]).hydra.launcher
    assert local._target_.endswith("LocalLauncher") and local.gpus_per_node == 0


def _wandb_records(path):
    """The protobuf records of a W&B offline run file (a 7-byte W&B header, then LevelDB log blocks)."""
    data = open(path, "rb").read()
    pos, buf, block = 7, b"", 32768
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # block trailer
            pos += left
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        payload, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 1:  # full record
            yield payload
        elif kind == 2:  # first, middle, last fragments
            buf = payload
        elif kind == 3:
            buf += payload
        elif kind == 4:
            yield buf + payload


def _wandb_runs(job_dir):
    """(run id, group, name) of each W&B offline run under a job directory."""
    from wandb.proto import wandb_internal_pb2

    runs = []
    for path in glob.glob(os.path.join(job_dir, "wandb", "offline-run-*", "run-*.wandb")):
        for data in _wandb_records(path):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(data)
            if record.WhichOneof("record_type") == "run":
                runs.append((record.run.run_id, record.run.run_group, record.run.display_name))
                break
    return runs


@pytest.mark.slow
def test_local_launcher_sweep_runs_each_job_apart_and_reports(tiny_base_ckpt, tmp_path, repo_root):
    """Two debug online jobs (zprl, noise) through submitit's local launcher, as a SLURM sweep would run
    them: own process, own output directory, own W&B run in the sweep's group; the report reads the sweep."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep_dir = tmp_path / "sweep"
    overrides = [o for o in tiny_online_overrides(tiny_base_ckpt, **{"logging.mode": "offline"})]
    cmd = [sys.executable, os.path.join(repo_root, "train.py"), "--multirun", f"--config-name={ONLINE_CONFIG}",
           "+sweep=steering_seeds", "hydra/launcher=zprl_local", "steering=zprl,noise", "training.seed=0",
           f"hydra.sweep.dir={sweep_dir}", "training.num_threads=1", *overrides]
    env = {**os.environ, "PYTHONPATH": repo_root, "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=repo_root, env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    jobs = sorted(p for p in os.listdir(sweep_dir) if p.isdigit())
    assert jobs == ["0", "1"]
    wandb_ids = set()
    for job, steering in zip(jobs, ("zprl", "noise")):
        job_dir = sweep_dir / job
        overrides = OmegaConf.load(job_dir / ".hydra" / "overrides.yaml")
        assert f"steering={steering}" in overrides and "training.seed=0" in overrides
        records = [json.loads(line) for line in open(job_dir / "logs.json.txt")]
        assert records[-1]["agent_steps"] == 64 and os.path.isfile(job_dir / "checkpoints" / "latest.ckpt")
        ((run_id, group, name),) = _wandb_runs(str(job_dir))
        assert group == "steering_seeds_lift_lowdim" and name == f"steering_seeds_lift_lowdim_{steering}_seed0"
        wandb_ids.add(run_id)
    assert len(wandb_ids) == 2
    # submitit ran the two jobs as two processes (the local executor names a job by its pid), each with its logs
    submitted = glob.glob(str(sweep_dir / ".submitit" / "*" / "*_0_result.pkl"))
    assert len({os.path.dirname(p) for p in submitted}) == 2, os.listdir(sweep_dir / ".submitit")

    out = tmp_path / "report"
    rep = subprocess.run([sys.executable, "-m", "zprl.report", str(sweep_dir), "-o", str(out)], cwd=repo_root,
                         env=env, capture_output=True, text=True, timeout=300)
    assert rep.returncode == 0, rep.stderr[-2000:]
    text = (out / "report.md").read_text()
    assert "| zprl |" in text and "| noise |" in text
