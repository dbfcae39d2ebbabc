"""Scripted experts in real robosuite: delta actions reproduce the planned targets, tasks succeed."""

from __future__ import annotations

import numpy as np
import pytest

from zprl.data.experts import TIER_NAMES, get_tier, make_expert, tier_schedule
from zprl.data.generate_demos import MAX_STEPS
from zprl.env.robomimic_env import create_env, make_env_meta


@pytest.fixture(scope="module")
def envs():
    made = {}

    def get(task):
        if task not in made:
            np.random.seed(0)
            made[task] = create_env(make_env_meta(task, "low_dim", hard_reset=False))
        return made[task]

    yield get
    for env in made.values():
        env.env.close()


def _rollout(env, task, seed, tier=None):
    np.random.seed(seed)
    env.reset()
    expert = make_expert(task, env, np.random.default_rng(seed), tier)
    actions = []
    for t in range(MAX_STEPS[task]):
        actions.append(expert.act())
        env.step(actions[-1])
        if env.is_success()["task"]:
            return True, np.array(actions), expert
    return False, np.array(actions), expert


def test_delta_action_lands_controller_goal_on_the_command(envs):
    env = envs("lift")
    np.random.seed(3)
    env.reset()
    expert = make_expert("lift", env, np.random.default_rng(3))
    arm, ctrl = expert.arms[0], env.env.robots[0].controller
    checked = 0
    for _ in range(40):
        a = expert.act()
        assert a.shape == (7,) and np.all(np.abs(a) <= 1.0)
        env.step(a)
        if np.all(np.abs(a[:6]) < 0.999):  # unclipped: the OSC goal is exactly the planned pose
            np.testing.assert_allclose(ctrl.goal_pos, arm.cmd, atol=1e-9)
            # robosuite converts rotations through float32 quaternions
            np.testing.assert_allclose(ctrl.goal_ori, arm.target_rot(arm.yaw), atol=1e-5)
            checked += 1
    assert checked >= 20


@pytest.mark.parametrize("task,seed", [("lift", 11), ("can", 11), ("square", 11)])
def test_expert_succeeds(envs, task, seed):
    ok, actions, _ = _rollout(envs(task), task, seed)
    assert ok, f"{task} expert failed on seed {seed}"
    assert np.all(np.abs(actions) <= 1.0)
    assert set(np.unique(actions[:, 6])) == {-1.0, 1.0}  # opened and closed the gripper


def test_worse_operator_is_slower_and_rougher_than_expert(envs):
    env = envs("lift")
    ok_e, act_e, _ = _rollout(env, "lift", 21)
    ok_w, act_w, expert = _rollout(env, "lift", 21, "worse")
    assert ok_e and ok_w
    assert len(act_w) > len(act_e)
    rough = lambda a: np.abs(np.diff(a[:, :3], axis=0)).mean()  # noqa: E731
    assert rough(act_w) > rough(act_e)


def test_tiers():
    rng = np.random.default_rng(0)
    sched = tier_schedule(30, rng)
    assert sorted(sched) == sorted(list(TIER_NAMES) * 10)
    assert tier_schedule(30, np.random.default_rng(0)) == sched
    assert get_tier(None).pos_noise == 0 and get_tier("expert").miss_prob == 0
    noise = [get_tier(n).pos_noise for n in TIER_NAMES]
    assert noise == sorted(noise) and noise[0] > 0
    with pytest.raises(ValueError, match="great"):
        get_tier("great")


def _finger_dir(env, robot):
    sim, pads = env.env.sim, robot.gripper.important_geoms
    left = sim.data.geom_xpos[sim.model.geom_name2id(pads["left_fingerpad"][0])]
    right = sim.data.geom_xpos[sim.model.geom_name2id(pads["right_fingerpad"][0])]
    d = (left - right)[:2]
    return d / np.linalg.norm(d)


@pytest.mark.slow
def test_transport_trash_cleared_while_robot0_unpacks_the_hammer(envs):
    env = envs("transport")
    np.random.seed(5)
    env.reset()
    expert = make_expert("transport", env, np.random.default_rng(5))
    tg = env.env.transport
    lid0, hammer_z0 = tg.lid_handle_pos.copy(), expert.hammer_z()
    trash_in_at = lifted_at = None
    for t in range(400):
        a = expert.act()
        assert a.shape == (14,) and np.all(np.abs(a) <= 1.0)
        env.step(a)
        if trash_in_at is None and tg.trash_in_trash_bin:
            trash_in_at = t
        if expert.hammer_z() > hammer_z0 + 0.1:
            lifted_at = t
            break
    # robot1 had the trash in the trash bin before robot0, working at the same time, had taken the
    # lid off (it now lies elsewhere on the table) and lifted the hammer out of the start bin
    assert trash_in_at is not None and lifted_at is not None and trash_in_at < lifted_at
    assert np.linalg.norm(tg.lid_handle_pos[:2] - lid0[:2]) > 0.3 and tg.lid_handle_pos[2] < lid0[2]
    # robot0 holds the hammer with its fingers across the handle, not along it
    axis = expert.handle_axis()[:2]
    assert abs(_finger_dir(env, env.env.robots[0]) @ (axis / np.linalg.norm(axis))) < 0.2
    assert not tg.payload_in_target_bin  # not done yet


# Measured 2026-12-06: the expert succeeds on all four seeds (on 11 and 12 after picking the trash
# cube up a second time: the first grasp's lift check passed, then the cube slipped out).
@pytest.mark.slow  # ~25 s an episode
@pytest.mark.parametrize("tier", [None, "okay"])
def test_transport_expert_succeeds(envs, tier):
    # A fixed sample of 4 seeds (chosen before running them) with one failure allowed.
    seeds = [11, 12, 13, 14]
    results = {seed: _rollout(envs("transport"), "transport", seed, tier) for seed in seeds}
    wins = [seed for seed, (ok, _, _) in results.items() if ok]
    assert len(wins) >= 3, f"transport expert ({tier or 'expert'}) succeeded only on seeds {wins} of {seeds}"
    for seed in wins:
        actions = results[seed][1]
        assert actions.shape[1] == 14 and np.all(np.abs(actions) <= 1.0)
        for arm in (0, 1):  # each arm opened and closed its gripper
            assert set(np.unique(actions[:, 7 * arm + 6])) == {-1.0, 1.0}


def test_transport_eases_tiers_but_keeps_their_order():
    from zprl.data.experts.transport import eased

    assert eased(get_tier("expert")) == get_tier("expert")
    tiers = [eased(get_tier(n)) for n in TIER_NAMES]
    speeds = [t.speed for t in tiers]
    assert speeds == sorted(speeds, reverse=True) and min(speeds) >= 0.8
    for field in ("pos_noise", "pause_prob", "detour_prob", "miss_prob", "regrasp_prob"):
        vals = [getattr(t, field) for t in tiers]
        assert vals == sorted(vals) and vals[0] > 0
    worse = get_tier("worse")
    assert eased(worse).miss_prob == worse.miss_prob / 2 and eased(worse).pos_noise == worse.pos_noise
