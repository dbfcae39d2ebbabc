"""Exact resume after a real ``kill -9``, and same seed -> same records (issue 11, items 2 and 8).

A training process is SIGKILLed at a random moment after its first checkpoint (the moment is
printed, so a failure can be replayed), rerun with ``training.resume=True`` in the same run
directory, and its records must equal those of an uninterrupted run with the same seed: same
losses at the same steps, same evaluation outcomes; only the wall/CPU clocks differ. Online this
includes the training episodes in flight at the checkpoint (replayed in fresh env workers).
"""

import os
import random
import signal
import time

import pytest
import torch

from conftest import (OFFLINE_CONFIG, ONLINE_CONFIG, run_records, small_offline_sizes, tiny_offline_overrides,
                      tiny_online_overrides, train_cli)
from zprl.common.checkpoint import load_checkpoint

# 96 agent steps in 2 envs, a checkpoint and an evaluation every 32: episodes of 20 chunks are in flight at
# every checkpoint (16 and 12 chunks in), and rounds of updates overlap the checkpoints
ONLINE = {"training.debug": "false", "online_task.n_envs": 2, "online_task.n_eval_envs": 1,
          "online_task.n_eval_episodes": 2, "online_task.n_eval_vis": 0, "online_task.max_steps": 80,
          "training.total_agent_steps": 96, "training.warmup_agent_steps": 16, "training.training_freq": 16,
          "training.batch_size": 32, "training.buffer_size": 1000, "training.eval_every": 32,
          "training.checkpoint_every": 32, "training.log_every": 16}
# 6 epochs of 3 steps, a checkpoint (and a 1-episode rollout) after each
OFFLINE = small_offline_sizes(6)


def kill_at_random(proc, first_file, window_s, rng):
    """SIGKILL ``proc`` (the training process itself) ``U(0, window_s)`` seconds after ``first_file``
    appears; returns (delay, whether it was still running). Leftover children are killed after."""
    while not os.path.exists(first_file):
        assert proc.poll() is None, f"the run ended (status {proc.returncode}) before writing {first_file}"
        time.sleep(0.05)
    delay = rng.uniform(0.0, window_s)
    time.sleep(delay)
    alive = proc.poll() is None
    if alive:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    try:  # env workers / W&B service orphaned by the kill
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    print(f"killed {delay:.2f} s after {os.path.basename(first_file)} appeared (still running: {alive})")
    assert alive, f"the run had finished {delay:.2f} s after {first_file} appeared: the kill window is too long"
    return delay, alive


def assert_same_records(straight, resumed):
    assert len(resumed) == len(straight), f"{len(resumed)} records after resume, {len(straight)} uninterrupted"
    for i, (a, b) in enumerate(zip(straight, resumed)):
        assert a == b, f"record {i} differs:\n uninterrupted {a}\n resumed       {b}"


@pytest.fixture(scope="module")
def online_straight(tiny_base_ckpt, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("online") / "straight"
    proc = train_cli(ONLINE_CONFIG, tiny_online_overrides(tiny_base_ckpt, **ONLINE), run_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


@pytest.mark.slow
def test_online_kill9_and_resume_gives_the_uninterrupted_run(tiny_base_ckpt, online_straight, tmp_path):
    rng = random.Random()
    run_dir = tmp_path / "killed"
    args = tiny_online_overrides(tiny_base_ckpt, **ONLINE, **{"logging.mode": "offline"})
    ckpts = run_dir / "checkpoints"
    # two kills: in the first segment and in the resumed one
    proc = train_cli(ONLINE_CONFIG, args, run_dir, wait=False)
    kill_at_random(proc, str(ckpts / "step_000032.ckpt"), 12.0, rng)
    proc = train_cli(ONLINE_CONFIG, args + ["training.resume=true"], run_dir, wait=False)
    kill_at_random(proc, str(ckpts / "step_000064.ckpt"), 8.0, rng)
    done = train_cli(ONLINE_CONFIG, args + ["training.resume=true"], run_dir)
    assert done.returncode == 0, done.stderr[-3000:]

    straight = run_records(online_straight)
    assert_same_records(straight, run_records(run_dir))
    assert [r["agent_steps"] for r in straight if "eval/success_rate" in r] == [0, 32, 64, 96]
    a = load_checkpoint(online_straight / "checkpoints" / "latest.ckpt")
    b = load_checkpoint(ckpts / "latest.ckpt")
    for part in ("actor", "critic", "critic_target"):
        for name, tensor in a["state"]["sac"][part].items():
            assert torch.equal(tensor, b["state"]["sac"][part][name]), f"sac.{part}.{name} differs"
    for name, tensor in a["state"]["replay"]["data"].items():
        assert torch.equal(tensor, b["state"]["replay"]["data"][name]), f"replay {name} differs"
    # W&B (offline mode here) continued the one run id across the three segments
    run_id = b["wandb_id"]
    wandb_runs = os.listdir(run_dir / "wandb")
    segments = [d for d in wandb_runs if d.startswith("offline-run-")]
    assert run_id and segments and all(d.endswith(run_id) for d in segments), (run_id, wandb_runs)



@pytest.mark.slow
def test_online_kill9_and_resume_with_env_groups(tiny_base_ckpt, tmp_path):
    """The same with the training envs stepping in 2 groups (training.env_groups=2): nothing is in flight
    between iterations, so a checkpoint and its resume see the same loop state as with one group."""
    args = tiny_online_overrides(tiny_base_ckpt, **ONLINE, **{"training.env_groups": 2})
    straight = train_cli(ONLINE_CONFIG, args, tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr[-3000:]
    run_dir = tmp_path / "killed"
    proc = train_cli(ONLINE_CONFIG, args, run_dir, wait=False)
    kill_at_random(proc, str(run_dir / "checkpoints" / "step_000032.ckpt"), 4.0, random.Random())
    done = train_cli(ONLINE_CONFIG, args + ["training.resume=true"], run_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_records(run_records(tmp_path / "straight"), run_records(run_dir))

@pytest.mark.slow
def test_offline_kill9_and_resume_gives_the_uninterrupted_run(lift_lowdim_abs_file, tmp_path):
    rng = random.Random()
    args = tiny_offline_overrides(lift_lowdim_abs_file, **OFFLINE)
    straight = train_cli(OFFLINE_CONFIG, args, tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr[-3000:]
    run_dir = tmp_path / "killed"
    proc = train_cli(OFFLINE_CONFIG, args, run_dir, wait=False)
    kill_at_random(proc, str(run_dir / "checkpoints" / "latest.ckpt"), 4.0, rng)
    done = train_cli(OFFLINE_CONFIG, args + ["training.resume=true"], run_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_records(run_records(tmp_path / "straight"), run_records(run_dir))
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "latest.ckpt")["state"]
    b = load_checkpoint(run_dir / "checkpoints" / "latest.ckpt")["state"]
    assert a["global_step"] == b["global_step"] == 18
    for key in ("model", "ema_model"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), f"{key}.{name} differs after resume"
    assert a["topk"] == b["topk"]


@pytest.mark.slow
def test_same_seed_same_records_online(tiny_base_ckpt, online_straight, tmp_path):
    """Determinism: a second run with the same seed logs the same records (and the same SAC weights)."""
    again = train_cli(ONLINE_CONFIG, tiny_online_overrides(tiny_base_ckpt, **ONLINE), tmp_path / "again")
    assert again.returncode == 0, again.stderr[-3000:]
    assert_same_records(run_records(online_straight), run_records(tmp_path / "again"))
    a = load_checkpoint(online_straight / "checkpoints" / "latest.ckpt")["state"]["sac"]["actor"]
    b = load_checkpoint(tmp_path / "again" / "checkpoints" / "latest.ckpt")["state"]["sac"]["actor"]
    assert all(torch.equal(t, b[k]) for k, t in a.items())


@pytest.mark.slow
def test_same_seed_same_records_offline(lift_lowdim_abs_file, tmp_path):
    from conftest import run_offline

    run_offline(lift_lowdim_abs_file, tmp_path / "a")
    run_offline(lift_lowdim_abs_file, tmp_path / "b")
    assert_same_records(run_records(tmp_path / "a"), run_records(tmp_path / "b"))
    a = load_checkpoint(tmp_path / "a" / "checkpoints" / "latest.ckpt")["state"]["model"]
    b = load_checkpoint(tmp_path / "b" / "checkpoints" / "latest.ckpt")["state"]["model"]
    assert all(torch.equal(t, b[k]) for k, t in a.items())
