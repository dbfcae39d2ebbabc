"""The online workspace end to end on real robosuite: a tiny ZPRL run, its logs, a frozen base, eval_sum."""

import json
import os

import pytest
import torch
from conftest import run_online, run_records
from zprl.common.checkpoint import BASE_SHA_FILE, load_checkpoint, weights_sha256
from zprl.common.logging import read_json_lines


@pytest.fixture(scope="module")
def online_run(tiny_base_ckpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("online_run")
    workspace, last_eval = run_online(tiny_base_ckpt, out)
    return workspace, last_eval, str(out)


def test_tiny_run_counts_env_steps_and_logs_everything(online_run):
    workspace, last_eval, out = online_run
    records = read_json_lines(os.path.join(out, "logs.json.txt"))
    n_action_steps = workspace.n_action_steps
    assert n_action_steps == 4
    for r in records:
        assert r["env_steps"] == r["agent_steps"] * n_action_steps
        assert r["executed_env_steps"] <= r["env_steps"]
    evals = [r for r in records if "eval/success_rate" in r]
    assert evals[0]["agent_steps"] == 0 and evals[0]["eval/base_only"] == 1  # the base, before learning
    assert evals[-1]["agent_steps"] == 64 and evals[-1]["eval/base_only"] == 0
    train = [r for r in records if "train/warmup" in r]
    assert any(r["train/warmup"] == 1 and r["rms_scaled_dz"] == 0.0 for r in train)  # dz = 0 in warm-up
    learning = [r for r in train if r["train/warmup"] == 0]
    # overlapped updates (the default) start beside the chunk after the first round is due
    assert learning and learning[-1]["updates"] > 0
    assert all("sac/critic_loss" in r for r in learning if r["updates"] > 0)
    assert all("train/action_delta" in r and "rms_z" in r for r in learning)
    # UTD 1: one update per transition from the warm-up's last round on, in rounds of training_freq;
    # the warm-up's 16 owed updates wait until the buffer holds a batch (32), never dropped
    assert workspace.updates == 64
    assert os.path.exists(os.path.join(out, "checkpoints", "step_000064.ckpt"))
    assert any(f.startswith("eval_000064_") for f in os.listdir(os.path.join(out, "media")))


def test_base_policy_stays_bit_identical(online_run, tiny_base_ckpt):
    workspace, _, _ = online_run
    saved = load_checkpoint(tiny_base_ckpt)["state"]["ema_model"]
    live = workspace.steering.policy.state_dict()
    assert saved.keys() == live.keys()
    for name, tensor in saved.items():
        assert torch.equal(tensor, live[name].cpu()), f"base parameter {name} changed during RL"


def test_run_names_its_base_weights_beside_the_logs(online_run, tiny_base_ckpt):
    """base_policy.sha256 (what zprl.report names the base by) hashes the EMA weights the run steered:
    the same for any copy of the checkpoint, different for any other weights."""
    _, _, out = online_run
    with open(os.path.join(out, BASE_SHA_FILE)) as f:
        recorded = f.read().strip()
    saved = load_checkpoint(tiny_base_ckpt)["state"]["ema_model"]
    assert recorded == weights_sha256(saved)
    nudged = {k: v.clone() for k, v in saved.items()}
    name = next(k for k, v in nudged.items() if v.is_floating_point())
    nudged[name].view(-1)[0] += 1e-3
    assert weights_sha256(nudged) != recorded


def test_checkpoint_holds_what_resume_needs(online_run, tiny_base_ckpt):
    _, _, out = online_run
    latest = load_checkpoint(os.path.join(out, "checkpoints", "latest.ckpt"))["state"]
    step = load_checkpoint(os.path.join(out, "checkpoints", "step_000064.ckpt"))["state"]
    assert latest["base_ckpt"] == os.path.abspath(tiny_base_ckpt) and len(latest["base_ckpt_sha256"]) == 64
    assert latest["counters"]["agent_steps"] == 64
    assert latest["replay"]["size"] == 64 and step["replay"] is None
    assert set(latest["sac"]) >= {"actor", "critic", "critic_target", "log_alpha", "actor_opt", "critic_opt"}


def test_resume_continues_with_the_saved_buffer(online_run, tiny_base_ckpt, tmp_path):
    import shutil

    _, _, out = online_run
    resumed = tmp_path / "resumed"
    shutil.copytree(os.path.join(out, "checkpoints"), resumed / "checkpoints")
    # the debug sizes spelled out, with a longer horizon than the run being resumed
    small = {"training.debug": "false", "online_task.n_envs": 2, "online_task.n_eval_envs": 2,
             "online_task.n_eval_episodes": 2, "online_task.n_eval_vis": 1, "online_task.max_steps": 80,
             "training.warmup_agent_steps": 16, "training.training_freq": 16, "training.batch_size": 32,
             "training.buffer_size": 1000, "training.eval_every": 64, "training.checkpoint_every": 64,
             "training.log_every": 16, "training.total_agent_steps": 96, "training.resume": "true"}
    workspace, _ = run_online(tiny_base_ckpt, resumed, **small)
    assert workspace.agent_steps == 96
    assert len(workspace.buffer) == 96  # 64 restored + 32 new
    records = read_json_lines(str(resumed / "logs.json.txt"))
    assert min(r["agent_steps"] for r in records) > 64  # no second base evaluation on resume


def test_resume_from_a_step_snapshot_says_it_has_no_buffer(online_run, tiny_base_ckpt, tmp_path, caplog):
    """step_XXXXXX.ckpt holds no replay buffer: copied over latest.ckpt (to go back), the run goes on
    with an empty buffer, and says so instead of passing for an exact resume."""
    import logging
    import shutil

    _, _, out = online_run
    (tmp_path / "back" / "checkpoints").mkdir(parents=True)
    shutil.copy(os.path.join(out, "checkpoints", "step_000064.ckpt"), tmp_path / "back" / "checkpoints" / "latest.ckpt")
    small = {"training.debug": "false", "online_task.n_envs": 2, "online_task.n_eval_envs": 2,
             "online_task.n_eval_episodes": 2, "online_task.n_eval_vis": 0, "online_task.max_steps": 80,
             "training.warmup_agent_steps": 16, "training.training_freq": 16, "training.batch_size": 8,
             "training.buffer_size": 1000, "training.eval_every": 64, "training.checkpoint_every": 64,
             "training.log_every": 16, "training.total_agent_steps": 80, "training.resume": "true"}
    with caplog.at_level(logging.WARNING, logger="zprl"):
        workspace, _ = run_online(tiny_base_ckpt, tmp_path / "back", **small)
    assert workspace.agent_steps == 80 and len(workspace.buffer) == 16  # the 64 earlier transitions are gone
    assert any("holds no replay buffer" in r.getMessage() and "agent step 64" in r.getMessage()
               for r in caplog.records)


def test_eval_sum_evaluates_the_composed_policy(online_run, tmp_path):
    import eval_sum

    _, _, out = online_run
    dest = tmp_path / "eval"
    ckpt = os.path.join(out, "checkpoints", "step_000064.ckpt")
    assert eval_sum.main(["-c", ckpt, "-o", str(dest), "-d", "cpu", "-n", "2", "--n_vis", "1", "--n_envs", "1"]) == 0
    log = json.loads((dest / "eval_log.json").read_text())
    assert [e["seed"] for e in log["episodes"]] == [100000, 100001]
    assert log["env_steps"] == 64 * 4 and log["steering"]["name"] == "zprl"
    assert (dest / "media" / "test_100000.mp4").exists()


def test_overlapped_updates_match_the_serial_schedule(online_run, tiny_base_ckpt, tmp_path):
    """Overlapped updates run while the workers simulate: same updates, same data before the first round."""
    overlapped, _, _ = online_run  # training.overlap_updates defaults to true
    serial, _ = run_online(tiny_base_ckpt, tmp_path, **{"training.overlap_updates": "false"})
    assert serial.updates == overlapped.updates == 64
    assert len(serial.buffer) == len(overlapped.buffer) == 64
    # warm-up plus the first training_freq transitions are collected before any update in both
    # schedules, so they are identical; afterwards the overlapped actor is part-way through a round
    first_round = 16 + 16
    for field in ("state", "action", "reward", "next_state"):
        a = serial.buffer.data[field][:first_round]
        b = overlapped.buffer.data[field][:first_round]
        assert torch.equal(a, b), f"{field} differs before the first update round"
    # ...and the overlap was in effect: later actions come from a different actor
    assert not torch.equal(serial.buffer.data["action"][first_round:], overlapped.buffer.data["action"][first_round:])


def test_eval_at_end_false_leaves_the_last_evaluation_to_eval_sum(tiny_base_ckpt, tmp_path):
    """training.eval_at_end=false (the demo, whose eval_sum.py stage scores the final checkpoint on
    the same seeds): no evaluation after the last agent step, even where the cadence falls on it."""
    # the debug run evaluates every 64 agent steps and stops at 64: the end is on the cadence
    workspace, _ = run_online(tiny_base_ckpt, tmp_path, **{"training.eval_at_end": "false"})
    evals = [r["agent_steps"] for r in read_json_lines(os.path.join(tmp_path, "logs.json.txt"))
             if "eval/success_rate" in r]
    assert workspace.cfg.training.eval_every == 64 and workspace.agent_steps == 64
    assert evals == [0]  # the base's, before learning; none at 64
    assert os.path.exists(os.path.join(tmp_path, "checkpoints", "step_000064.ckpt"))  # what eval_sum.py scores


@pytest.mark.parametrize("groups", [1, 2])
def test_time_outs_bootstrap_from_their_final_frame_with_and_without_env_groups(tiny_base_ckpt, tmp_path, groups):
    """training.bootstrap=truncation: a timed-out episode's transition stores the encoding of its final
    frame as next_state (not the next episode's first frame, which the env returns after its autoreset);
    every other transition's next_state is that env's next state. Also with the envs stepping in 2
    groups (training.env_groups), which collects and updates as much as one group."""
    ws, _ = run_online(tiny_base_ckpt, tmp_path, **{"training.env_groups": groups, "training.bootstrap": "truncation",
                                                     "online_task.max_steps": 40})
    assert ws.agent_steps == len(ws.buffer) == ws.updates == 64
    assert ws.successes_done == 0  # the tiny base never lifts: every episode ends by time-out, 10 chunks long
    data = ws.buffer.data
    # rows: one per env per iteration, env 0 first; the next row of the same env is 2 rows on
    moved = [i for i in range(62) if not torch.equal(data["next_state"][i], data["state"][i + 2])]
    assert moved == [i for i in range(62) if (i // 2) % 10 == 9]  # the 10th chunk of each episode, both envs
    assert not data["terminal"][:64].any()  # time-outs bootstrap


def test_a_faulted_chunk_is_not_a_smoothness_sample(tiny_base_ckpt, tmp_path, monkeypatch):
    """An env whose chunk is non-finite (as when a blown-up VIB posterior decodes to non-finite
    actions, docs/steering.md) is truncated as a fault; its chunk must not reach the training smoothness, which would
    otherwise log train/action_delta = nan for the whole log window (seen in a can evidence run)."""
    import numpy as np

    from zprl.workspace import online_collect

    make = online_collect.make_vector_env

    def make_with_one_nan_chunk(*args, **kwargs):
        envs = make(*args, **kwargs)
        step_async, calls = envs.step_async, {"n": 0}

        def nan_on_the_5th(chunk):
            calls["n"] += 1
            if calls["n"] == 5:  # env 0's 5th chunk of the run
                chunk = np.array(chunk, copy=True)
                chunk[0] = np.nan
            return step_async(chunk)

        envs.step_async = nan_on_the_5th
        return envs

    monkeypatch.setattr(online_collect, "make_vector_env", make_with_one_nan_chunk)
    ws, _ = run_online(tiny_base_ckpt, tmp_path)
    records = run_records(tmp_path)
    assert ws.env_faults == 1 and [r["train/env_faults"] for r in records if "train/env_faults" in r][-1] == 1
    deltas = [r["train/action_delta"] for r in records if "train/action_delta" in r]
    assert deltas and all(isinstance(d, float) and np.isfinite(d) for d in deltas)
