"""Environment faults (issue 11, item 4): an env worker that dies or hangs is replaced, a step that
is not finite (or that MuJoCo found unstable) ends its episode, and in each case only that env's
episode is lost, as truncated with fault=True, while the others and training go on."""

import os
import signal
import time

import numpy as np
import pytest
from gymnasium.vector import AutoresetMode
from test_env import SHAPE_META

from zprl.data.paths import repo_root
from zprl.env.robomimic_env import make_env_meta
from zprl.env.vector_env import RolloutEnvConfig, make_vector_env, step_info


@pytest.fixture
def mujoco_log_left_alone(monkeypatch, tmp_path):
    """MuJoCo writes its warnings to MUJOCO_LOG.TXT in the working directory: keep it out of the repo."""
    monkeypatch.chdir(tmp_path)
    stray = os.path.join(repo_root(), "MUJOCO_LOG.TXT")
    existed = os.path.exists(stray)
    yield
    if not existed and os.path.exists(stray):  # written by a worker started from the repo directory
        os.remove(stray)


@pytest.mark.slow  # four env worker starts and a 5 s timeout: ~40 s on 2 busy cores
def test_a_dead_hung_or_unstable_env_worker_truncates_its_episode_and_training_goes_on(mujoco_log_left_alone):
    """Training envs (FaultTolerantVectorEnv): a worker killed with SIGKILL, and one stopped (SIGSTOP)
    past the step timeout, are replaced; a NaN action makes MuJoCo unstable and ends that episode.
    Each time only that env's episode ends, as truncated with fault=True, and stepping goes on."""
    cfg = RolloutEnvConfig(env_meta=make_env_meta("lift", obs="low_dim", abs_action=True), shape_meta=SHAPE_META,
                           n_obs_steps=1, n_action_steps=4, max_steps=200, render_size=None)
    envs = make_vector_env(cfg, 2, autoreset_mode=AutoresetMode.SAME_STEP, restart_failed=True, step_timeout=5.0,
                           restart_seed=lambda index, restarts: 1000 + restarts)

    def hold(obs, nan_env=None):  # command the current hand pose: the episode just goes on
        a = np.zeros((2, 4, 10), np.float32)
        a[:, :, :3] = obs["robot0_eef_pos"][:, -1:, :]
        a[:, :, 3:9] = [1, 0, 0, 0, -1, 0]  # gripper pointing down (rot6d)
        if nan_env is not None:
            a[nan_env] = np.nan
        return a

    def step(obs, expect_fault, nan_env=None):
        obs, _, term, trunc, raw = envs.step(hold(obs, nan_env))
        info = step_info(raw)
        assert info["fault"].tolist() == expect_fault and trunc.tolist() == expect_fault and not term.any()
        assert all(np.isfinite(v).all() for v in obs.values())
        return obs, info

    try:
        obs, _ = envs.reset(seed=[0, 1])
        obs, _ = step(obs, [False, False])
        envs.processes[0].kill()                                  # dies between two steps
        obs, info = step(obs, [True, False])
        assert envs.restarts == 1 and info["n_executed"].tolist() == [0, 4]
        os.kill(envs.processes[1].pid, signal.SIGSTOP)            # hangs
        t0 = time.monotonic()
        obs, _ = step(obs, [False, True])
        assert envs.restarts == 2 and 4.5 < time.monotonic() - t0 < 60
        obs, info = step(obs, [True, False], nan_env=0)           # unstable simulation, same worker
        assert envs.restarts == 2 and info["n_executed"][0] == 1 and info["chunk_rewards"][0].sum() == 0
        obs, info = step(obs, [False, False])
        assert info["episode_length"].tolist() == [4, 8]          # both in the episodes their faults began
    finally:
        envs.close(terminate=True)


def test_a_non_finite_step_ends_the_episode_as_a_fault(mujoco_log_left_alone):
    """In the env itself (also with one env in the main process): a NaN command is caught (MuJoCo
    zeroes a non-finite control and warns), the episode ends truncated with fault=True, its
    observation history keeps the last good frame and a reset starts a clean episode."""
    env = RolloutEnvConfig(env_meta=make_env_meta("lift", obs="low_dim", abs_action=True), shape_meta=SHAPE_META,
                           n_obs_steps=2, n_action_steps=4, max_steps=200, render_size=None).build()
    try:
        obs, _ = env.reset(seed=0)
        chunk = np.zeros((4, 10), np.float32)
        chunk[:, :3], chunk[:, 3:9] = obs["robot0_eef_pos"][-1], [1, 0, 0, 0, -1, 0]
        obs, _, term, trunc, info = env.step(chunk)
        assert not info["fault"] and not (term or trunc)
        chunk[2:] = np.nan
        after, reward, term, trunc, info = env.step(chunk)
        assert info["fault"] and trunc and not term and reward == 0.0
        assert info["n_executed"] == 3 and info["episode_length"] == 7
        assert all(np.isfinite(v).all() for v in after.values())
        np.testing.assert_array_equal(after["robot0_eef_pos"][-1], env._history[-1]["robot0_eef_pos"])
        again, *_ = env.step(chunk)  # ended: further steps are no-ops
        assert env.reset(seed=1)[0]["robot0_eef_pos"].shape == (2, 3) and not env.step(np.nan_to_num(chunk))[4]["fault"]
    finally:
        env.close()


def test_env_groups_keep_a_faulty_worker_to_its_own_env(mujoco_log_left_alone):
    """training.env_groups: the training envs as 2 fault-tolerant vector envs behind EnvGroups. A worker
    killed in the second group reports its env's episode as the fault at that env's place in the batch,
    replacements in different groups get different seeds, and calls reach every env in order."""
    from zprl.env.vector_env import EnvGroups, join_obs
    from zprl.workspace.online_collect import FAULT_SEED_BASE, fault_seeds

    cfg = RolloutEnvConfig(env_meta=make_env_meta("lift", obs="low_dim", abs_action=True), shape_meta=SHAPE_META,
                           n_obs_steps=1, n_action_steps=4, max_steps=200, render_size=None)
    envs = EnvGroups([make_vector_env(cfg, 1, asynchronous=True, autoreset_mode=AutoresetMode.SAME_STEP,
                                      restart_failed=True, restart_seed=fault_seeds(g, 2))
                      for g in range(2)])
    try:
        assert envs.num_envs == 2 and envs.groups == [slice(0, 1), slice(1, 2)]
        obs, _ = envs.reset(seed=[0, 1])
        envs.envs[1].processes[0].kill()
        a = np.zeros((2, 1, 4, 10), np.float32)  # per group: (1 env, 4 steps, 10-D)
        a[:, :, :, :3] = obs["robot0_eef_pos"][:, None, -1:, :]
        a[:, :, :, 3:9] = [1, 0, 0, 0, -1, 0]
        for g in range(2):
            envs.step_async(g, a[g])
        results = [envs.step_wait(g) for g in range(2)]
        fault = np.concatenate([step_info(r[4])["fault"] for r in results])
        assert fault.tolist() == [False, True] and envs.envs[1].restarts == 1
        assert join_obs([r[0] for r in results])["robot0_eef_pos"].shape == (2, 1, 3)
        assert len(envs.call("episode_record")) == 2
        # the workspace's replacement seeds: disjoint between groups, the ungrouped loop's rule for one group
        seeds = [{fault_seeds(g, 2)(0, r) for r in range(50)} for g in range(2)]
        assert not seeds[0] & seeds[1] and min(seeds[0] | seeds[1]) == FAULT_SEED_BASE
        assert [fault_seeds(0, 1)(0, r) for r in range(3)] == [FAULT_SEED_BASE + r for r in range(3)]
    finally:
        envs.close(terminate=True)
