"""What the authors' evaluation protocol needs from the logs: smoothness of the actions executed in
evaluation (runner), training success over the last 100 finished episodes (kept on resume), and
each record's wall and CPU time (online loop)."""

import os

import numpy as np
import pytest
import torch

from zprl.common.logging import read_json_lines
from zprl.env.runner import RobomimicEnvRunner
from zprl.rl.smoothness import SmoothnessTracker

LENGTHS = {100000: 7, 100001: 10, 100002: 5}  # control steps per test episode; chunks of 4
SUCCESS = {100001}


def position(seed: int, t: int) -> np.ndarray:
    """The scripted action at control step t (1-based): a cubic in x, a ramp in y; the 7 other
    (rotation, gripper) dims jump by 10 every step, which smoothness must ignore."""
    a = np.full(10, 5.0 * (-1) ** t, np.float32)
    a[:3] = (0.001 * (seed - 99990) * t ** 3, 0.05 * t, 0.2)
    return a


class ScriptedVenv:
    """A vector env with the evaluation runner's protocol (no autoreset, no-op steps after the end,
    idle padding envs): it executes scripted actions, up to the episode's end inside a chunk."""

    def __init__(self, n_envs: int, k: int = 4):
        self.n, self.k, self.idle = n_envs, k, [False] * n_envs

    def set_attr(self, name, values):
        if name == "idle":
            self.idle = list(values)

    def reset(self, seed):
        self.seeds, self.t, self.ended = list(seed), [0] * self.n, list(self.idle)
        return self._obs(), {}

    def _obs(self):
        return {"x": np.zeros((self.n, 1, 1), np.float32)}

    def step(self, action):
        assert action.shape == (self.n, self.k, 10)
        executed = np.zeros((self.n, self.k, 10), np.float32)
        n_exec, length = np.zeros(self.n, int), np.zeros(self.n, int)
        reward, term, trunc = np.zeros(self.n), np.zeros(self.n, bool), np.zeros(self.n, bool)
        for i in range(self.n):
            while not self.ended[i] and n_exec[i] < self.k:
                self.t[i] += 1
                executed[i, n_exec[i]] = position(self.seeds[i], self.t[i])
                n_exec[i] += 1
                if self.t[i] == LENGTHS[self.seeds[i]]:
                    self.ended[i] = True
                    reward[i] = float(self.seeds[i] in SUCCESS)
            if self.ended[i] and not self.idle[i]:
                term[i] = self.seeds[i] in SUCCESS
                trunc[i] = not term[i]
            length[i] = self.t[i]
        info = {"episode_length": length, "executed_actions": executed, "n_executed": n_exec}
        return self._obs(), reward, term, trunc, info

    def close(self):
        pass


class ZeroPolicy:
    device, dtype = torch.device("cpu"), torch.float32

    def __init__(self, n_envs):
        self.n_envs = n_envs

    def predict_action(self, obs):
        return {"action": torch.zeros(self.n_envs, 4, 10)}


def expected_smoothness(seeds):
    """Pooled over the episodes, each episode's own differences only (numpy, independent of the tracker)."""
    deltas, jerks = [], []
    for seed in seeds:
        p = np.stack([position(seed, t)[:3] for t in range(1, LENGTHS[seed] + 1)]).astype(np.float64)
        deltas.append(np.linalg.norm(np.diff(p, axis=0), axis=1))
        jerks.append((np.diff(p, 3, axis=0) ** 2).sum(axis=1))
    return np.concatenate(deltas).mean(), np.concatenate(jerks).mean(), deltas, jerks


@pytest.mark.parametrize("n_envs", [1, 2])
def test_runner_measures_executed_actions_per_episode(tmp_path, n_envs):
    runner = RobomimicEnvRunner(str(tmp_path), env_meta={}, shape_meta={}, n_train=0, n_test=3, max_steps=20,
                                n_action_steps=4, n_envs=n_envs, n_test_vis=0, render_size=None, tqdm=False)
    runner._venv = ScriptedVenv(n_envs)  # 2 envs: the second batch pads with an idle env
    result = runner.run(ZeroPolicy(n_envs))
    runner.close()
    delta, jerk, per_delta, per_jerk = expected_smoothness(sorted(LENGTHS))
    # pooled over every difference of every episode: the same whichever env ran which episode
    assert result["test/action_delta"] == pytest.approx(delta, rel=1e-5)
    assert result["test/action_jerk"] == pytest.approx(jerk, rel=1e-5)
    assert result["test/mean_score"] == pytest.approx(1 / 3)
    eps = result["episodes"]
    assert [e["length"] for e in eps] == [7, 10, 5]
    for ep, d, j in zip(eps, per_delta, per_jerk):
        assert ep["action_delta"] == pytest.approx(d.mean(), rel=1e-5)
        assert ep["action_jerk"] == pytest.approx(j.mean(), rel=1e-5)
        assert "_smoothness" not in ep  # the pooling totals stay inside the runner


def test_a_difference_across_episodes_would_show():
    """The check above can fail: joining the episodes into one stream gives other numbers."""
    delta, jerk, _, _ = expected_smoothness(sorted(LENGTHS))
    joined = SmoothnessTracker(1, 10)
    for seed in sorted(LENGTHS):
        chunk = np.stack([position(seed, t) for t in range(1, LENGTHS[seed] + 1)])[None]
        joined.add(chunk, [len(chunk[0])], [False])
    out = joined.pop()
    assert out["action_delta"] != pytest.approx(delta, rel=1e-3)
    assert out["action_jerk"] != pytest.approx(jerk, rel=1e-3)


# -- the online loop on real robosuite (a tiny debug run) ----------------------------------------
@pytest.fixture(scope="module")
def protocol_run(tiny_base_ckpt, tmp_path_factory):
    from conftest import run_online

    out = tmp_path_factory.mktemp("protocol_run")
    workspace, _ = run_online(tiny_base_ckpt, out)
    return workspace, str(out)


def test_online_logs_eval_smoothness_and_run_times(protocol_run, tmp_path):
    _, out = protocol_run
    records = read_json_lines(os.path.join(out, "logs.json.txt"))
    evals = [r for r in records if "eval/success_rate" in r]
    train = [r for r in records if "train/warmup" in r]
    assert evals and train
    for r in evals:
        assert r["eval/action_delta"] > 0 and r["eval/action_jerk"] >= 0
    walls = [r["time/wall_s"] for r in evals + train]
    assert all(w > 0 for w in walls) and all(r["time/cpu_s"] > 0 for r in evals + train)
    timed = [r["time/wall_s"] for r in records if "time/wall_s" in r]
    assert timed == sorted(timed)  # one clock, in the order written
    # a debug run finishes a handful of episodes: no training success over 100 of them
    assert not any("train/success_rate_last100" in r for r in records)

    from zprl.report import write_report

    summary = write_report([out], str(tmp_path / "report"))
    (row,) = summary.values()
    assert row["eval/action_delta"] is not None and row["cpu_share"] is not None and row["wall_s"] is not None
    text = (tmp_path / "report" / "report.md").read_text()
    assert "not reached (budget 256 env steps)" in text


def test_last100_window_is_logged_and_survives_resume(protocol_run, tmp_path, monkeypatch):
    from conftest import ONLINE_CONFIG, compose_config, tiny_online_overrides
    from omegaconf import OmegaConf

    from zprl.workspace.online import OnlineWorkspace

    workspace, _ = protocol_run
    logged = []
    monkeypatch.setattr(workspace, "log_metrics", lambda record, step: logged.append(record))
    workspace.success_last100.clear()

    def finish(success: bool):  # env 0 finishes an episode, env 1 does not
        workspace._count_episodes(np.array([success, True]), np.array([True, False]))

    for _ in range(60):
        finish(False)
    for _ in range(39):
        finish(True)
    workspace._log_train()  # 99 finished episodes: not yet
    assert "train/success_rate_last100" not in logged[-1]
    for _ in range(60):
        finish(True)
    workspace._log_train()  # 159 finished: the last 100 are 1 failure + 99 successes
    assert logged[-1]["train/success_rate_last100"] == pytest.approx(0.99)
    assert logged[-1]["time/wall_s"] > 0 and logged[-1]["time/cpu_s"] > 0

    state = workspace.state_dict(with_buffer=False)
    assert state["success_last100"] == [False] + [True] * 99
    assert state["time"]["time/wall_s"] >= logged[-1]["time/wall_s"]
    cfg = compose_config(ONLINE_CONFIG, tiny_online_overrides(workspace.base_ckpt_path))
    OmegaConf.resolve(cfg)
    fresh = OnlineWorkspace(cfg, output_dir=str(tmp_path))
    fresh.load_state_dict(state)
    assert list(fresh.success_last100) == list(workspace.success_last100)
    times = fresh._run_times()  # the resumed clock continues from the saved totals
    assert times["time/wall_s"] >= state["time"]["time/wall_s"]
    assert times["time/cpu_s"] >= state["time"]["time/cpu_s"]
    # a checkpoint from before these keys still loads: empty window, clock from 0
    del state["success_last100"], state["time"]
    fresh.load_state_dict(state)
    assert len(fresh.success_last100) == 0 and fresh._run_times()["time/wall_s"] < times["time/wall_s"]
