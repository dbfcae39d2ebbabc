"""Faults a long run must survive (issue 11, items 3 and 5): a kill during a checkpoint save, a kill
between the steps of top-k bookkeeping, the memory a checkpoint save needs, and non-finite losses."""

import glob
import math
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from conftest import run_offline, small_offline_sizes
from zprl.common.checkpoint import TopKCheckpoints, atomic_save, load_checkpoint, remove_partial_saves
from zprl.common.errors import NonFiniteLoss

# A child that saves a ~16 MB payload to latest.ckpt over and over, each one tagged with its number.
SAVER = textwrap.dedent("""
    import sys, torch
    from zprl.common.checkpoint import atomic_save
    i = int(sys.argv[2])
    while True:
        atomic_save({"i": i, "data": torch.full((4_000_000,), float(i))}, sys.argv[1])
        print(i, flush=True)
        i += 1
""")


def test_a_kill_during_a_save_never_leaves_a_truncated_checkpoint(tmp_path):
    """SIGKILL a process that is writing latest.ckpt, four times at random moments: the file always
    loads, complete, as one of the saves that finished; the interrupted save leaves only a temp file."""
    from zprl.data.paths import repo_root

    path, rng = str(tmp_path / "latest.ckpt"), random.Random()
    env = {**os.environ, "PYTHONPATH": repo_root(), "OMP_NUM_THREADS": "1"}
    start, interrupted = 0, 0
    for _ in range(4):
        child = subprocess.Popen([sys.executable, "-c", SAVER, path, str(start)], env=env, stdout=subprocess.PIPE,
                                 text=True)
        assert child.stdout.readline().strip() == str(start)  # one save finished
        time.sleep(rng.uniform(0.0, 0.5))
        child.send_signal(signal.SIGKILL)
        child.wait()
        interrupted += bool(glob.glob(str(tmp_path / ".tmp-*.ckpt")))
        payload = load_checkpoint(path)
        assert payload["data"].shape == (4_000_000,) and bool((payload["data"] == payload["i"]).all())
        assert payload["i"] >= start
        start = payload["i"] + 1
        remove_partial_saves(str(tmp_path))
        assert os.listdir(tmp_path) == ["latest.ckpt"]
    assert interrupted >= 1, "no kill landed inside a save: the test proved nothing"


def test_topk_bookkeeping_survives_a_kill_between_its_steps(tmp_path):
    """The offline checkpoint order: update the table, write the new top-k file, write latest.ckpt
    (with the table), delete the displaced file. Killed after any step, the last complete
    latest.ckpt's table names only existing files, and prune() after resume removes the extras."""
    topk = TopKCheckpoints(str(tmp_path), k=2, mode="max")
    for epoch, score in enumerate([0.2, 0.5]):
        atomic_save({"epoch": epoch}, topk.path_for(epoch, score))
    saved = topk.state_dict()  # what latest.ckpt holds
    new = topk.path_for(2, 0.9)  # displaces epoch 0
    atomic_save({"epoch": 2}, new)
    # killed here, before latest.ckpt: resume loads the old table
    resumed = TopKCheckpoints(str(tmp_path), k=2, mode="max")
    resumed.load_state_dict(saved)
    assert all(os.path.exists(tmp_path / name) for name in resumed.table)
    assert resumed.prune() == [new] and sorted(os.listdir(tmp_path)) == sorted(resumed.table)
    # ... and the repeated epoch makes the same decision; killed after latest.ckpt, before the delete
    assert resumed.path_for(2, 0.9) == new
    atomic_save({"epoch": 2}, new)
    again = TopKCheckpoints(str(tmp_path), k=2, mode="max")
    again.load_state_dict(resumed.state_dict())
    assert [os.path.basename(p) for p in again.prune()] == ["epoch_0000-score_0.200.ckpt"]
    assert sorted(os.listdir(tmp_path)) == ["epoch_0001-score_0.500.ckpt", "epoch_0002-score_0.900.ckpt"]
    # tables of older checkpoints held absolute paths: they load as names, so a moved run dir works
    moved = TopKCheckpoints(str(tmp_path), k=2)
    moved.load_state_dict({"table": {"/elsewhere/epoch_0002-score_0.900.ckpt": 0.9}})
    assert moved.table == {"epoch_0002-score_0.900.ckpt": 0.9}


MEMORY = textwrap.dedent("""
    import resource, sys, torch
    from zprl.common.checkpoint import atomic_save
    from zprl.rl.replay import EmbeddingReplayBuffer
    buf = EmbeddingReplayBuffer(200_000, 240, 16)          # ~400 MB of rows
    rows = torch.randn(1000, 240)
    for _ in range(120):                                   # 60% filled: ~240 MB
        buf.add(rows, torch.zeros(1000, 16), torch.zeros(1000), rows, torch.zeros(1000))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    atomic_save({"replay": buf.state_dict()}, sys.argv[1])
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(before // 1024, after // 1024, buf.nbytes_per_transition() * len(buf) // 2**20)
""")


def test_saving_the_replay_buffer_does_not_copy_it(tmp_path):
    from zprl.data.paths import repo_root

    env = {**os.environ, "PYTHONPATH": repo_root(), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", MEMORY, str(tmp_path / "latest.ckpt")], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    before_mb, after_mb, filled_mb = map(int, out.stdout.split())
    assert filled_mb > 200
    assert after_mb - before_mb < 0.1 * filled_mb, f"peak RSS grew {after_mb - before_mb} MB saving {filled_mb} MB"
    assert os.path.getsize(tmp_path / "latest.ckpt") < 1.05 * filled_mb * 2**20  # the filled rows only


# ---- non-finite losses ---------------------------------------------------------------------------
def test_a_non_finite_sac_loss_stops_with_one_line(tiny_base_ckpt, tmp_path):
    from omegaconf import OmegaConf

    from conftest import ONLINE_CONFIG, compose_config, tiny_online_overrides
    from zprl.workspace.online import OnlineWorkspace

    cfg = compose_config(ONLINE_CONFIG, tiny_online_overrides(tiny_base_ckpt))
    OmegaConf.resolve(cfg)
    ws = OnlineWorkspace(cfg, output_dir=str(tmp_path))
    n = 64
    ws.buffer.add(torch.randn(n, ws.buffer.state_dim), torch.zeros(n, ws.buffer.action_dim), torch.zeros(n),
                  torch.randn(n, ws.buffer.state_dim), torch.zeros(n))
    update, calls = ws.sac.update, []

    def nan_on_third(batch):
        m = update(batch)
        calls.append(1)
        return {**m, "critic_loss": math.nan} if len(calls) == 3 else m

    ws.sac.update, ws.agent_steps = nan_on_third, 48
    with pytest.raises(NonFiniteLoss) as err:
        ws._update(5)
    msg = str(err.value)
    assert "\n" not in msg and "update 3 " in msg and "agent step 48" in msg and "sac/critic_loss=nan" in msg
    assert "No checkpoint had been written yet" in msg and ws.updates == 2


@pytest.mark.slow
def test_a_non_finite_offline_loss_keeps_the_last_good_checkpoint_and_resume_works(lift_lowdim_abs_file, tmp_path,
                                                                                   monkeypatch):
    """NaN in the imitation loss at global step 4 (epoch 1): the run stops with one line naming the step and
    the term; latest.ckpt is still epoch 0's, and resuming from it finishes the run exactly as one that
    never failed (same records, same weights)."""
    from zprl.common.logging import read_json_lines
    from zprl.policy.flow_vib import FlowMatchVIBUnetImagePolicy

    small = small_offline_sizes(3)
    run_offline(lift_lowdim_abs_file, tmp_path / "straight", **small)

    compute_loss, steps = FlowMatchVIBUnetImagePolicy.compute_loss, []

    def nan_at_step_4(self, batch):
        loss, metrics = compute_loss(self, batch)
        steps.append(self.training)  # validation calls it too, in eval mode
        if self.training and sum(steps) == 5:  # global step 4: the imitation term blows up
            loss, metrics = loss * math.nan, {**metrics, "il_loss": math.nan, "loss": math.nan}
        return loss, metrics

    run_dir = tmp_path / "failed"
    monkeypatch.setattr(FlowMatchVIBUnetImagePolicy, "compute_loss", nan_at_step_4)
    with pytest.raises(NonFiniteLoss) as err:
        run_offline(lift_lowdim_abs_file, run_dir, **small)
    msg = str(err.value)
    assert "\n" not in msg and "global step 4 (epoch 1)" in msg and "train/il_loss=nan" in msg
    assert "latest.ckpt: rerun with training.resume=True" in msg
    kept = load_checkpoint(run_dir / "checkpoints" / "latest.ckpt")["state"]
    assert kept["global_step"] == 3 and kept["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in kept["model"].values() if t.is_floating_point())

    monkeypatch.setattr(FlowMatchVIBUnetImagePolicy, "compute_loss", compute_loss)
    run_offline(lift_lowdim_abs_file, run_dir, **small, **{"training.resume": "true"})
    assert read_json_lines(run_dir / "logs.json.txt") == read_json_lines(tmp_path / "straight" / "logs.json.txt")
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "latest.ckpt")["state"]
    b = load_checkpoint(run_dir / "checkpoints" / "latest.ckpt")["state"]
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name

