"""Data-parallel offline training under ``accelerate launch`` (issue 12, item 1), proved on CPU: two
processes (gloo) with 8 samples each against one process with 16, the same seed and config.

The two runs draw the same data order and the same per-sample noise (zprl.model.batch_shard,
zprl.workspace.distributed), so their loss trajectories differ only by float rounding: the
gradient is the mean of two half-batch means, summed across processes by gloo, instead of one
mean over 16. Also: one run directory (the default, timestamped hydra.run.dir), one log without
duplicate records, rollouts and checkpoints by the main process, checkpoints that eval_base.py and
the online workspace's loader read, and exact resume after every process is SIGKILLed.
"""

import glob
import os
import random
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from conftest import OFFLINE_CONFIG, run_records, tiny_offline_overrides, train_cli
from zprl.common.checkpoint import load_checkpoint
from zprl.data.paths import repo_root

# 3 epochs of 6 steps (84 training samples: 5 batches of 16 and a last one of 4, 2 per process),
# validation every epoch (main process), a 1-episode rollout after epochs 1 and 2, a checkpoint each epoch
SMALL = {"training.debug": "false", "training.num_epochs": 3, "training.max_train_steps": "null",
         "training.max_val_steps": 2, "training.val_every": 1, "training.rollout_every": 2,
         "training.checkpoint_every": 1, "training.lr_warmup_steps": 2, "dataloader.num_workers": 0,
         "val_dataloader.batch_size": 16, "val_dataloader.num_workers": 0, "task.env_runner.n_train": 0,
         "task.env_runner.n_train_vis": 0, "task.env_runner.n_test": 1, "task.env_runner.n_test_vis": 1}
GLOBAL_BATCH = 16
# Tolerance on each step's logged train_loss, relative, 2 processes vs 1. Not zero: float32 sums in
# another order (two half-batch means averaged by gloo's all-reduce, instead of one mean over 16)
# change the gradient's last bits, Adam carries that into the weights, and later losses move by
# about as much (measured: at most 1.2e-7 over these 15 per-step losses). 100x that leaves room for
# other CPUs' rounding and stays far below what a fault moves at this size (measured with the fault
# put in): both processes drawing the same noise for their different samples, 1e-3 to 8e-2 from
# step 0; gradients not averaged across processes, 1.5e-4 at step 2 growing to 1e-2.
LOSS_RTOL = 1e-5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accelerate_cli(overrides, cwd, num_processes=2, run_dir=None, wait=True):
    """``accelerate launch --multi_gpu --num_processes N train.py ...`` as a user types it, from ``cwd``.
    (On CPUs accelerate's --cpu starts one process; --multi_gpu is its torchrun launcher, and
    training.device=cpu makes zprl's Accelerator use gloo on the CPU.)"""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(num_processes),
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(free_port()), os.path.join(repo_root(), "train.py"),
           f"--config-name={OFFLINE_CONFIG}", *overrides, "training.num_threads=1"]
    if run_dir is not None:
        cmd.append(f"hydra.run.dir={run_dir}")
    os.makedirs(cwd, exist_ok=True)
    # HF_HOME: no accelerate config file of this machine's user changes the launch
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": repo_root(), "HF_HOME": os.path.join(cwd, ".hf")}
    if not wait:
        log = open(os.path.join(cwd, "launch.out"), "ab")
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=1200)


def args(dataset, batch_size, **extra):
    return tiny_offline_overrides(dataset, **SMALL, **{"dataloader.batch_size": batch_size}, **extra)


# ---- fast: the pieces ------------------------------------------------------------------------------

def test_batch_shard_gives_each_process_its_rows_of_the_global_draw():
    from zprl.model.batch_shard import batch_shard, randint_rows, randn_rows
    from zprl.model.obs_encoder import crop_images
    from zprl.model.vib import reparameterize

    def draws():
        mu, logvar = torch.zeros(16, 3), torch.zeros(16, 3)
        images = torch.arange(16 * 3 * 8 * 8, dtype=torch.float32).reshape(16, 3, 8, 8)
        return [randn_rows((16, 5, 2)), randint_rows(100, 16), reparameterize(mu, logvar),
                crop_images(images, (6, 6), random=True)]

    torch.manual_seed(0)
    whole = draws()
    torch.manual_seed(0)
    plain = [torch.randn(16, 5, 2), torch.randint(0, 100, (16,))]
    assert torch.equal(whole[0], plain[0]) and torch.equal(whole[1], plain[1])  # outside a shard: torch's own calls
    for index in range(2):
        torch.manual_seed(0)
        with batch_shard(2, index):
            mu, logvar = torch.zeros(8, 3), torch.zeros(8, 3)
            images = torch.arange(16 * 3 * 8 * 8, dtype=torch.float32).reshape(16, 3, 8, 8)[index * 8:(index + 1) * 8]
            half = [randn_rows((8, 5, 2)), randint_rows(100, 8), reparameterize(mu, logvar),
                    crop_images(images, (6, 6), random=True)]
        for w, h in zip(whole, half):
            assert torch.equal(w[index * 8:(index + 1) * 8], h)


def test_rank_slice_splits_every_global_batch_evenly():
    from torch.utils.data import BatchSampler, SequentialSampler

    from zprl.workspace.distributed import RankSlice

    for size, drop_last in ((84, False), (85, False), (81, False), (84, True)):
        batches = BatchSampler(SequentialSampler(range(size)), 16, drop_last)
        shards = [list(RankSlice(batches, 2, r)) for r in range(2)]
        assert len(shards[0]) == len(shards[1]) == len(RankSlice(batches, 2, 0))
        for step, (a, b) in enumerate(zip(*shards)):
            whole = list(batches)[step]
            assert len(a) == len(b) and a + b == whole[:len(a) + len(b)] and len(whole) - len(a) - len(b) < 2
    # 81 = 5 x 16 + 1: the last single sample cannot be split, so that step is skipped by both
    assert len(RankSlice(BatchSampler(SequentialSampler(range(81)), 16, False), 2, 0)) == 5


def test_only_the_main_process_gets_a_hydra_run_dir(monkeypatch):
    from zprl.workspace.launch import hydra_args_for_this_process

    argv = ["--config-name=x", "task=lift_lowdim_abs", "hydra.run.dir=out/run", "hydra/job_logging=default"]
    for name in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert hydra_args_for_this_process(argv) == argv
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    assert hydra_args_for_this_process(argv) == argv
    monkeypatch.setenv("RANK", "1")
    assert hydra_args_for_this_process(argv) == ["--config-name=x", "task=lift_lowdim_abs", "hydra.run.dir=.",
                                                 "hydra.output_subdir=null", "hydra/job_logging=none"]


def test_mixed_precision_option(monkeypatch):
    from omegaconf import OmegaConf

    from conftest import compose_config
    from zprl.common.errors import UserInputError
    from zprl.workspace.distributed import mixed_precision_of

    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    cfg = compose_config(OFFLINE_CONFIG)
    assert cfg.training.mixed_precision == "no" and mixed_precision_of(cfg) == "no"
    for value, expected in (("bf16", "bf16"), ("fp16", "fp16"), ("no", "no")):
        assert mixed_precision_of(compose_config(OFFLINE_CONFIG, [f"training.mixed_precision={value}"])) == expected
    with pytest.raises(UserInputError, match="use one of no, fp16, bf16"):
        mixed_precision_of(OmegaConf.create({"training": {"mixed_precision": "fp8"}}))
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")  # accelerate launch --mixed_precision bf16
    with pytest.raises(UserInputError, match="pass training.mixed_precision=bf16"):
        mixed_precision_of(cfg)


# ---- slow: real runs through accelerate launch ---------------------------------------------------------

@pytest.fixture(scope="module")
def runs(lift_lowdim_abs_file, tmp_path_factory):
    """(1-process run dir, 2-process run dir, the 2-process launch's working directory)."""
    root = tmp_path_factory.mktemp("accelerate")
    one = root / "one"
    proc = train_cli(OFFLINE_CONFIG, args(lift_lowdim_abs_file, GLOBAL_BATCH), one)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the default hydra.run.dir (data/outputs/<date>/<time>_...), resolved by each process at its own moment
    cwd = root / "two_cwd"
    proc = accelerate_cli(args(lift_lowdim_abs_file, GLOBAL_BATCH // 2), cwd)
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-3000:])
    made = glob.glob(str(cwd / "data" / "outputs" / "*" / "*"))
    assert len(made) == 1, f"one run directory expected, got {made}"
    return one, made[0], cwd


@pytest.mark.slow
def test_two_processes_follow_the_one_process_loss_trajectory(runs):
    one, two, _ = runs
    a = [r for r in run_records(one) if "train_loss" in r]
    b = [r for r in run_records(two) if "train_loss" in r]
    assert [r["global_step"] for r in a] == [r["global_step"] for r in b] == list(range(18))
    assert [r["lr"] for r in a] == [r["lr"] for r in b]  # one schedule step per global batch
    # per-step records (an epoch's last step is logged in its summary, as the epoch's mean)
    per_step = [(r["global_step"], r["train_loss"], s["train_loss"]) for r, s in zip(a, b) if "val_loss" not in r]
    abs_diff = [abs(x - y) for _, x, y in per_step]
    rel_diff = [abs(x - y) / abs(x) for _, x, y in per_step]
    print(f"\ntrain_loss, 2 processes x {GLOBAL_BATCH // 2} vs 1 x {GLOBAL_BATCH}, {len(per_step)} steps: "
          f"max abs diff {max(abs_diff):.3g}, max rel diff {max(rel_diff):.3g} "
          f"(losses {min(x for _, x, _ in per_step):.4f}..{max(x for _, x, _ in per_step):.4f})")
    for step, x, y in per_step:
        assert y == pytest.approx(x, rel=LOSS_RTOL), f"step {step}: 1 process {x}, 2 processes {y}"
    # the epoch summaries: mean train loss, and validation on the main process's EMA weights
    for r, s in zip(a, b):
        if "val_loss" in r:
            assert s["val_loss"] == pytest.approx(r["val_loss"], rel=LOSS_RTOL)
            assert s["train_loss"] == pytest.approx(r["train_loss"], rel=LOSS_RTOL)
    # the weights end where the 1-process run's end
    wa = load_checkpoint(os.path.join(one, "checkpoints", "latest.ckpt"))["state"]["ema_model"]
    wb = load_checkpoint(os.path.join(two, "checkpoints", "latest.ckpt"))["state"]["ema_model"]
    worst = max((wa[k] - wb[k]).abs().max().item() for k in wa if wa[k].is_floating_point())
    print(f"EMA weights after 18 steps: max abs diff {worst:.3g}")
    assert worst < 1e-5


@pytest.mark.slow
def test_one_run_directory_one_log_main_process_outputs(runs):
    one, two, cwd = runs
    # nothing but the one run directory (and the launcher's cache dir) in the launch's working directory
    assert sorted(set(os.listdir(cwd)) - {".hf"}) == ["data"]
    assert sorted(os.listdir(two)) == [".hydra", "checkpoints", "logs.json.txt", "media", "train.log"]
    records = run_records(two)
    steps = [r["global_step"] for r in records]
    assert steps == list(range(18)), "one record per step, written once (by the main process)"
    assert [r["epoch"] for r in records if "val_loss" in r] == [0, 1, 2]
    assert [r["epoch"] for r in records if "test_mean_score" in r] == [1, 2]
    assert sorted(os.listdir(os.path.join(two, "media"))) == sorted(os.listdir(one / "media")) == ["test_100000.mp4"]
    text = open(os.path.join(two, "train.log")).read()
    assert text.count("output dir ") == 1 and "accelerate: 2 processes (MULTI_CPU)" in text
    assert "global batch 16 = 8 per process" in text
    ckpts = sorted(os.listdir(os.path.join(two, "checkpoints")))  # top-k after the rollout epochs, and latest
    assert ckpts == sorted(os.listdir(one / "checkpoints")) and "latest.ckpt" in ckpts and len(ckpts) == 3
    state = load_checkpoint(os.path.join(two, "checkpoints", "latest.ckpt"))["state"]
    assert state["global_step"] == 18 and state["epoch"] == 3 and state["num_processes"] == 2


@pytest.mark.slow
def test_checkpoint_loads_in_eval_base_and_as_online_base(runs, tmp_path):
    import eval_base
    from zprl.policy.checkpoint import load_base_policy

    one, two, _ = runs
    ckpt = os.path.join(two, "checkpoints", "latest.ckpt")
    policy, cfg, payload = load_base_policy(ckpt, device="cpu")  # what the online workspace loads its base with
    ref, _, _ = load_base_policy(os.path.join(one, "checkpoints", "latest.ckpt"), device="cpu")
    assert cfg.dataloader.batch_size == GLOBAL_BATCH // 2
    obs = {k: torch.randn(3, 1, *v["shape"]) for k, v in cfg.shape_meta.obs.items()}
    noise = torch.randn(3, policy.horizon, policy.action_dim)
    act, act_ref = policy.predict_action(obs, noise=noise)["action"], ref.predict_action(obs, noise=noise)["action"]
    assert act.shape == (3, 4, 10) and torch.allclose(act, act_ref, atol=1e-4)
    out = tmp_path / "eval"
    assert eval_base.main(["-c", ckpt, "-o", str(out), "-d", "cpu", "-n", "1", "--n_vis", "0", "--n_envs", "1"]) == 0
    assert (out / "eval_log.json").exists()


@pytest.mark.slow
def test_resume_after_killing_every_process_gives_the_uninterrupted_run(runs, lift_lowdim_abs_file, tmp_path):
    import psutil

    _, straight, _ = runs
    run_dir = tmp_path / "killed"
    overrides = args(lift_lowdim_abs_file, GLOBAL_BATCH // 2)
    launcher = accelerate_cli(overrides, tmp_path, run_dir=run_dir, wait=False)
    first = run_dir / "checkpoints" / "latest.ckpt"
    while not first.exists():
        assert launcher.poll() is None, f"the run ended (status {launcher.returncode}) before its first checkpoint"
        time.sleep(0.05)
    delay = random.uniform(0.0, 3.0)
    time.sleep(delay)
    # SIGKILL the launcher and every process it started (each rank is its own session, with its env workers)
    tree = psutil.Process(launcher.pid).children(recursive=True)
    assert launcher.poll() is None, f"the run had finished {delay:.2f} s after its first checkpoint"
    for pid in [launcher.pid] + [p.pid for p in tree]:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    launcher.wait()
    stopped_at = load_checkpoint(first)["state"]["global_step"]
    print(f"\nkilled {delay:.2f} s after the first checkpoint; latest.ckpt at global step {stopped_at}")
    assert stopped_at < 18

    done = accelerate_cli(overrides + ["training.resume=true"], tmp_path, run_dir=run_dir)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-3000:])
    assert run_records(run_dir) == run_records(straight)
    a = load_checkpoint(os.path.join(straight, "checkpoints", "latest.ckpt"))["state"]
    b = load_checkpoint(run_dir / "checkpoints" / "latest.ckpt")["state"]
    assert a["global_step"] == b["global_step"] == 18
    for key in ("model", "ema_model"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), f"{key}.{name} differs after resume"


@pytest.mark.slow
def test_resume_with_another_number_of_processes_is_refused(runs, lift_lowdim_abs_file, tmp_path):
    import shutil

    _, two, _ = runs
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    shutil.copy(os.path.join(two, "checkpoints", "latest.ckpt"), run_dir / "checkpoints" / "latest.ckpt")
    proc = train_cli(OFFLINE_CONFIG, args(lift_lowdim_abs_file, GLOBAL_BATCH) + ["training.resume=true"], run_dir)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert "was trained by 2 process(es) and this run has 1" in last and "--num_processes 2" in last
