"""scripts/diagnose_steering.py: Monte-Carlo returns on the replay ring, and the whole report on a
tiny online run (slow: it needs the tiny base policy and a debug online run)."""

import json
import os
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import load_script


ds = load_script("scripts/diagnose_steering.py")


def _ordered(buffer):
    st = buffer.state_dict()
    order = ds.chronological_rows(st["size"], st["ptr"], st["capacity"])
    return {k: v[order] for k, v in st["data"].items()}


def test_chronological_rows_follow_the_ring():
    assert ds.chronological_rows(5, 5, 10).tolist() == [0, 1, 2, 3, 4]
    assert ds.chronological_rows(7, 3, 7).tolist() == [3, 4, 5, 6, 0, 1, 2]


def test_returns_match_hand_computation_on_a_wrapped_buffer():
    """Two envs written step by step into a ring of 9 rows (odd: the oldest kept step is partial).

    env 0: an episode ending in success at its step 2, then one timing out at step 5, then 2
           unfinished steps; env 1: success at step 4, then unfinished steps. gamma = 0.5.
    """
    from zprl.rl.replay import EmbeddingReplayBuffer

    gamma, n_steps = 0.5, 8
    ends = {0: {2: 1.0, 5: 0.0}, 1: {4: 1.0}}  # env -> {step: reward at the episode's last step}
    buf = EmbeddingReplayBuffer(9, 1, 1)
    for t in range(n_steps):
        state = torch.tensor([[100.0 * e + t] for e in range(2)])
        nxt = state + 1  # the next row's state: the stream is continuous (also across auto-resets)
        reward = torch.tensor([ends[e].get(t, 0.0) for e in range(2)])
        terminal = torch.tensor([float(t in ends[e]) for e in range(2)])
        buf.add(state, torch.zeros(2, 1), reward, nxt, terminal)
    data = _ordered(buf)
    G, known, info = ds.monte_carlo_returns(data["reward"].numpy(), data["terminal"].numpy(), data["state"],
                                            data["next_state"], n_envs=2, gamma=gamma)

    def expected(e, t):  # hand: the discounted return to the end of t's episode, None if unfinished
        later = [s for s in sorted(ends[e]) if s >= t]
        if not later:
            return None
        return ends[e][later[0]] * gamma ** (later[0] - t)

    # 16 rows written, 9 kept: the ring holds steps 3.5 .. 7 (the oldest, step 3, only for env 1)
    kept = [(s // 2, s % 2) for s in range(16 - 9, 16)]
    assert [(int(data["state"][k, 0].item()) % 100, int(data["state"][k, 0].item()) // 100)
            for k in range(9)] == kept
    for k, (t, e) in enumerate(kept):
        want = expected(e, t)
        assert known[k] == (want is not None), (t, e)
        if want is not None:
            assert G[k] == pytest.approx(want)
    assert info["rows_with_return"] == sum(expected(e, t) is not None for t, e in kept)
    assert info["stream_breaks"] == 0


def test_a_break_in_the_stream_drops_the_rows_before_it():
    """A resumed run starts fresh episodes: next_state_t != state_{t+1}, so the rows before the
    break have no observed return, even though a later episode ends."""
    reward = np.array([0.0, 0.0, 0.0, 1.0])
    terminal = np.array([0.0, 0.0, 0.0, 1.0])
    state = torch.tensor([[0.0], [1.0], [50.0], [51.0]])
    next_state = torch.tensor([[1.0], [2.0], [51.0], [52.0]])  # row 1 -> 2.0, but row 2 starts at 50.0
    G, known, info = ds.monte_carlo_returns(reward, terminal, state, next_state, n_envs=1, gamma=0.9)
    assert known.tolist() == [False, False, True, True]
    assert G[2:].tolist() == pytest.approx([0.9, 1.0])
    assert info["stream_breaks"] == 1


def test_auc_and_calibration_table():
    q = np.array([0.1, 0.2, 0.8, 0.9, 0.85])
    g = np.array([0.0, 0.0, 0.9, 0.0, 0.95])
    assert ds.roc_auc(q, g > 0) == pytest.approx(4 / 6)  # positives 0.8, 0.85 vs negatives 0.1, 0.2, 0.9
    assert ds.roc_auc(q, np.zeros(5, bool)) is None
    rows = ds.calibration_table(q, g)
    assert [(r["q_lo"], r["count"]) for r in rows] == [(pytest.approx(0.1), 1), (pytest.approx(0.2), 1),
                                                      (pytest.approx(0.8), 2), (pytest.approx(0.9), 1)]
    assert rows[2]["mean_g"] == pytest.approx(0.925) and rows[2]["frac_success"] == 1.0


def test_eval_envs_never_pad_a_batch():
    assert ds.eval_divisor(50, 2) == 2 and ds.eval_divisor(3, 2) == 1 and ds.eval_divisor(2, 8) == 2


def test_probe_counts_only_envs_whose_observation_changed():
    probe = ds.ChunkDeltaProbe(SimpleNamespace(policy=SimpleNamespace(action_dim=10)), actor=None)
    first = {"x": torch.tensor([[1.0], [2.0]])}
    assert probe._live_rows(first).tolist() == [True, True]
    assert probe._live_rows({"x": torch.tensor([[1.0], [3.0]])}).tolist() == [False, True]  # env 0 ended


# ---- end to end ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def diagnosed_run(tiny_base_ckpt, tmp_path_factory):
    from conftest import run_online

    out = tmp_path_factory.mktemp("diag_run")
    workspace, _ = run_online(tiny_base_ckpt, out)
    assert ds.main([str(out), "-n", "2", "--n_envs", "2", "--max_steps", "24", "-d", "cpu"]) == 0
    with open(out / "diagnostics_64.json") as f:
        return workspace, str(out), json.load(f)


@pytest.mark.slow
def test_report_has_every_measurement(diagnosed_run):
    _, _, report = diagnosed_run
    assert report["agent_steps"] == 64 and report["steering"]["name"] == "zprl"
    q = report["q_calibration"]
    for key in ("mean_q", "mean_g", "corr_q_g", "auc_q_success", "calibration", "mean_q_actor_deterministic",
                "mean_q_stored_action", "mean_q_unsteered_action", "rows_with_return", "gamma"):
        assert key in q
    assert q["gamma"] == pytest.approx(0.99 ** 4) and q["n_envs"] == 2
    assert sum(r["count"] for r in q["calibration"]) == q["n_compared"] > 0
    ev = report["evaluation"]
    assert ev["n_envs"] == 2 and ev["max_steps"] == 24
    for mode in ("base", "deterministic", "stochastic"):
        assert sorted(ev[mode]["success_by_seed"]) == ["100000", "100001"]
    for mode in ("deterministic", "stochastic"):
        d = ev[mode]["chunk_delta"]
        assert d["chunks"] == 2 * 24 // 4  # both episodes run to max_steps: 6 chunks each, all live
        for key in ("mean_abs_delta_normalized", "mean_abs_delta_pos_m", "frac_chunks_pos_over_1mm",
                    "frac_chunks_pos_over_5mm", "rms_rl_action", "rms_ratio"):
            assert d[key] is not None and d[key] >= 0
        assert d["base_flow_noise"]["chunks"] == d["chunks"]
    # the freshly initialised actor's dz is small but not zero: the chunk moves a little
    assert ev["deterministic"]["chunk_delta"]["mean_abs_delta_normalized"] > 0


@pytest.mark.slow
def test_q_and_returns_match_the_run(diagnosed_run):
    """Part 1 reproduces the workspace's own critic on its own buffer, and the returns by hand."""
    workspace, _, report = diagnosed_run
    q = report["q_calibration"]
    buf = workspace.buffer  # 64 rows, not wrapped: row = step * 2 + env
    rewards, terminal = buf.data["reward"][:64], buf.data["terminal"][:64]
    gamma = workspace.sac.gamma
    known, g = [], []
    for e in range(2):
        rows = list(range(e, 64, 2))
        following = None
        for r in reversed(rows):
            if terminal[r] > 0:
                following = float(rewards[r])
            elif following is not None:
                following = float(rewards[r]) + gamma * following
            if following is not None:
                known.append(r)
                g.append(following)
    assert q["rows_with_return"] == len(known) == q["n_compared"]
    assert q["mean_g"] == pytest.approx(float(np.mean(g)))
    idx = torch.as_tensor(sorted(known))
    with torch.no_grad():
        mine = workspace.sac.critic(*workspace.sac.critic_view(buf.data["state"][idx], buf.data["action"][idx]))
    assert q["mean_q"] == pytest.approx(mine.mean().item(), abs=1e-6)


@pytest.mark.slow
def test_zero_actor_changes_no_chunk_and_probe_rolls_out_as_steered_policy(diagnosed_run, tmp_path):
    from omegaconf import OmegaConf

    from zprl.common.checkpoint import atomic_save, load_checkpoint
    from zprl.env.runner import RobomimicEnvRunner
    from zprl.policy.steered import SteeredPolicy, load_steered_policy

    _, out, _ = diagnosed_run
    run = tmp_path / "zero_actor"
    shutil.copytree(os.path.join(out, "checkpoints"), run / "checkpoints")
    for name in ("step_000064.ckpt", "latest.ckpt"):
        payload = load_checkpoint(str(run / "checkpoints" / name))
        for key in ("mean.weight", "mean.bias"):
            payload["state"]["sac"]["actor"][key].zero_()  # tanh(mean) = 0: dz = 0 exactly
        atomic_save(payload, str(run / "checkpoints" / name))
    assert ds.main([str(run), "-n", "2", "--max_steps", "16", "-d", "cpu"]) == 0
    report = json.loads((run / "diagnostics_64.json").read_text())
    det = report["evaluation"]["deterministic"]["chunk_delta"]
    assert det["chunks"] > 0
    assert det["max_abs_delta_normalized"] == 0.0 and det["max_chunk_pos_delta_m"] == 0.0
    assert det["rms_rl_action"] == 0.0 and det["frac_chunks_pos_over_1mm"] == 0.0
    assert report["q_calibration"]["frac_q_det_above_unsteered"] == 0.0  # same action, same Q
    # ...while other flow noise does move the (barely trained) base's chunk: the comparison is live
    assert det["base_flow_noise"]["mean_abs_delta_normalized"] > 0

    # the probe's rollouts are SteeredPolicy's: same executed actions on the same seeds
    policy, base_cfg, state = load_steered_policy(os.path.join(out, "checkpoints", "step_000064.ckpt"))
    runner = RobomimicEnvRunner(str(tmp_path), state["env_meta"], OmegaConf.to_container(base_cfg.shape_meta, resolve=True),
                                n_train=0, n_test=2, max_steps=16, n_action_steps=state["n_action_steps"],
                                n_envs=2, n_test_vis=0, render_size=None, tqdm=False)
    try:
        plain = runner.run(SteeredPolicy(policy.steering, policy.actor, deterministic=True))
        probed = runner.run(ds.ChunkDeltaProbe(policy.steering, policy.actor, deterministic=True))
    finally:
        runner.close()
    for a, b in zip(plain["episodes"], probed["episodes"]):
        assert (a["seed"], a["length"], a["success"]) == (b["seed"], b["length"], b["success"])
        assert a["action_delta"] == b["action_delta"] and a["action_jerk"] == b["action_jerk"]
