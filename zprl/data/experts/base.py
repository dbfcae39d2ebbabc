"""Waypoint experts that plan absolute end-effector targets and emit delta OSC_POSE actions.

An expert is a Python generator (``script``) that yields once per control step; between yields it
has set, for every arm, the pose that arm should be commanded to. ``Arm`` turns that pose into the
delta action robosuite's OSC controller expects (``goal = eef + scale * action``), so the stored
actions are the same kind robomimic's human demonstrations have.

Motion rules that keep OSC well behaved: the commanded point moves at most ``max_step`` per step
and never runs more than ``max_lag`` ahead of the real end effector (so a delta never saturates and
a blocked arm does not wind up), and the wrist yaw turns gradually (a large orientation error
makes OSC swing the wrist the long way round).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Sequence, Union

import numpy as np
import robosuite.utils.transform_utils as T

from zprl.data.experts.tiers import EXPERT, Tier

OPEN, CLOSE = -1.0, 1.0

PosLike = Union[np.ndarray, Sequence[float], Callable[[], np.ndarray]]


def rotz(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def yaw_of_quat(quat_xyzw: np.ndarray) -> float:
    m = T.quat2mat(quat_xyzw)
    return float(np.arctan2(m[1, 0], m[0, 0]))


def wrap_symmetric(yaw: float, period: float) -> float:
    """The yaw equivalent to ``yaw`` under a ``period``-fold symmetry that is closest to zero."""
    return float((yaw + period / 2) % period - period / 2)


class Arm:
    """Commanded pose of one arm and its conversion to a delta OSC_POSE action."""

    def __init__(self, env, index: int, max_step: float = 0.015, max_lag: float = 0.05,
                 max_yaw_step: float = 0.04):
        self.sim = env.sim
        self.robot = env.robots[index]
        self.site = self.robot.eef_site_id
        self.max_step, self.max_lag, self.max_yaw_step = max_step, max_lag, max_yaw_step
        # Orientation at reset (gripper pointing down); yaw is measured about world z from it.
        self.base_rot = self.rot().copy()
        self.cmd = self.pos().copy()
        self.yaw = 0.0  # commanded yaw, turning toward yaw_goal
        self.yaw_goal = 0.0
        self.grip = OPEN
        ctrl = self.robot.controller
        in_span = np.asarray(ctrl.input_max - ctrl.input_min, dtype=float)
        out_span = np.asarray(ctrl.output_max - ctrl.output_min, dtype=float)
        self._scale = out_span / in_span  # metres (radians) per unit of action
        self._in_mid = np.asarray((ctrl.input_max + ctrl.input_min) / 2.0, dtype=float)
        self._out_mid = np.asarray((ctrl.output_max + ctrl.output_min) / 2.0, dtype=float)
        self._in_lo, self._in_hi = float(np.min(ctrl.input_min)), float(np.max(ctrl.input_max))

    def pos(self) -> np.ndarray:
        return self.sim.data.site_xpos[self.site].copy()

    def rot(self) -> np.ndarray:
        return self.sim.data.site_xmat[self.site].reshape(3, 3).copy()

    def target_rot(self, yaw: float) -> np.ndarray:
        return rotz(yaw) @ self.base_rot

    def advance(self, target: np.ndarray, speed: float = 1.0) -> None:
        """Move the commanded pose one step toward ``target`` and ``yaw_goal``."""
        step = np.asarray(target, dtype=float) - self.cmd
        dist = np.linalg.norm(step)
        limit = self.max_step * speed
        if dist > limit:
            step *= limit / dist
        self.cmd = self.cmd + step
        lag = self.cmd - self.pos()
        n = np.linalg.norm(lag)
        if n > self.max_lag:
            self.cmd = self.pos() + lag * (self.max_lag / n)
        self.yaw += float(np.clip(self.yaw_goal - self.yaw, -self.max_yaw_step, self.max_yaw_step))

    def delta_action(self, offset: np.ndarray | None = None) -> np.ndarray:
        """The 7-d delta action (pos 3, axis-angle 3, gripper 1) in the controller's input range.

        The OSC controller adds ``scale * a[:3]`` to the current eef position and left-multiplies
        the current orientation by the rotation ``scale * a[3:6]``; this inverts both.
        """
        goal = self.cmd if offset is None else self.cmd + offset
        d_pos = goal - self.pos()
        err = self.target_rot(self.yaw) @ self.rot().T
        d_rot = T.quat2axisangle(T.mat2quat(err))
        raw = np.concatenate([d_pos, d_rot])
        a = (raw - self._out_mid) / self._scale + self._in_mid
        a = np.clip(a, self._in_lo, self._in_hi)
        return np.concatenate([a, [self.grip]])

    def reached(self, target: np.ndarray, tol: float, rot_tol: float = 0.06) -> bool:
        """Position within ``tol`` and the wrist within ``rot_tol`` rad of its final yaw."""
        err = self.target_rot(self.yaw_goal) @ self.rot().T
        ang = np.arccos(np.clip((np.trace(err) - 1.0) / 2.0, -1.0, 1.0))
        return bool(np.linalg.norm(self.pos() - target) < tol and ang < rot_tol)


@dataclass
class Goal:
    """Where one arm should go: a fixed point or a function re-evaluated every step."""

    pos: PosLike
    yaw: float | None = None
    grip: float | None = None
    arm: int = 0

    def point(self) -> np.ndarray:
        return np.asarray(self.pos() if callable(self.pos) else self.pos, dtype=float)


class Expert:
    """Base class: subclasses write ``script()``; the base handles arms, tiers and actions."""

    #: robosuite env names this expert drives.
    env_name: str = ""
    num_arms: int = 1

    def __init__(self, env, rng: np.random.Generator, tier: Tier = EXPERT):
        # env: robomimic EnvRobosuite (or a raw robosuite env); the expert reads the simulator.
        self.raw = getattr(env, "env", env)
        self.sim = self.raw.sim
        self.rng = rng
        self.tier = tier
        self.arms = [Arm(self.raw, i) for i in range(self.num_arms)]
        self._noise = [np.zeros(3) for _ in self.arms]
        self._noise_scale = 1.0
        self.retries = 0
        self.mistakes = 0
        self.finished = False
        self._regrasped = False
        self._script: Iterator[None] = self.script()

    # -- subclass API --------------------------------------------------------------------------
    def script(self) -> Iterator[None]:
        raise NotImplementedError

    def body_pos(self, body_id: int) -> np.ndarray:
        return self.sim.data.body_xpos[body_id].copy()

    def body_quat(self, body_id: int) -> np.ndarray:
        return T.convert_quat(self.sim.data.body_xquat[body_id].copy(), to="xyzw")

    def reach(self, *goals: Goal, tol: float = 0.01, rot_tol: float = 0.06, timeout: int = 80,
              precise: bool = False, until: Callable[[], bool] | None = None) -> Iterator[None]:
        """Drive the named arms to their goals (others hold) until all are reached, ``until()``
        holds, or ``timeout`` steps pass. ``precise`` moves (grasping, inserting) get less
        operator noise, as people slow down and aim there."""
        self._noise_scale = 0.3 if precise else 1.0
        for g in goals:
            arm = self.arms[g.arm]
            if g.yaw is not None:
                arm.yaw_goal = g.yaw
            if g.grip is not None:
                arm.grip = g.grip
        for _ in range(timeout):
            yield from self._maybe_pause()
            points = {g.arm: g.point() for g in goals}
            for i, arm in enumerate(self.arms):
                target = points.get(i, arm.cmd)
                arm.advance(target, self.tier.speed)
            yield
            if until is not None and until():
                break
            if all(self.arms[i].reached(p, tol, rot_tol) for i, p in points.items()):
                break
        self._noise_scale = 1.0

    def hold(self, steps: int, grip: float | None = None, arm: int | None = None) -> Iterator[None]:
        """Stay put for ``steps`` steps, optionally switching a gripper (all arms if arm is None)."""
        if grip is not None:
            for i, a in enumerate(self.arms):
                if arm is None or arm == i:
                    a.grip = grip
        for _ in range(steps):
            for i, a in enumerate(self.arms):
                a.advance(a.cmd, self.tier.speed)
            yield

    def detour(self, arm: int, start: np.ndarray, end: np.ndarray, min_z: float) -> Iterator[None]:
        """With the tier's probability, wander through a random waypoint between start and end."""
        if self.tier.detour_prob <= 0 or self.rng.random() >= self.tier.detour_prob:
            return
        mid = (np.asarray(start) + np.asarray(end)) / 2.0
        off = self.rng.normal(size=3)
        off[2] = abs(off[2])
        off *= self.tier.detour_radius / max(np.linalg.norm(off), 1e-6)
        way = mid + off
        way[2] = max(way[2], min_z)
        yield from self.reach(Goal(way, arm=arm), tol=0.03, timeout=60)

    def grasp_miss_offset(self) -> np.ndarray:
        """A horizontal aim error large enough to miss the object, with the tier's probability."""
        if self.tier.miss_prob <= 0 or self.rng.random() >= self.tier.miss_prob:
            return np.zeros(3)
        self.mistakes += 1
        ang = self.rng.uniform(0, 2 * np.pi)
        dist = self.rng.uniform(0.035, 0.05)
        return np.array([np.cos(ang) * dist, np.sin(ang) * dist, 0.0])

    def wants_regrasp(self) -> bool:
        if self.tier.regrasp_prob <= 0 or self.rng.random() >= self.tier.regrasp_prob:
            return False
        self.mistakes += 1
        return True

    def pick(self, grasp_point: Callable[[], np.ndarray], yaw: float, obj_z: Callable[[], float],
             arm: int = 0, approach: float = 0.08, grasp_dz: float = -0.005, lift_z: float = 1.0,
             min_z: float = 0.9, tol: float = 0.01, grasp_tol: float = 0.008):
        """Approach from above, close on ``grasp_point``, lift; return True if the object came up.

        A miss (object still low once the hand has risen 5 cm) opens the gripper and returns False
        so the caller can try again; so does the tier's deliberate set-down-and-regrasp.
        """
        a = self.arms[arm]
        miss = self.grasp_miss_offset()

        def above():
            return grasp_point() + miss + [0.0, 0.0, approach]

        yield from self.detour(arm, a.pos(), above(), min_z)
        yield from self.reach(Goal(above, yaw, OPEN, arm), tol=tol, timeout=100)
        yield from self.reach(Goal(lambda: grasp_point() + miss + [0.0, 0.0, grasp_dz], arm=arm),
                              tol=grasp_tol, timeout=50, precise=True)
        yield from self.hold(10, CLOSE, arm)
        z0, start_z = obj_z(), a.pos()[2]
        xy = a.cmd[:2].copy()
        yield from self.reach(Goal(np.array([xy[0], xy[1], lift_z]), arm=arm), tol=0.02, timeout=60,
                              until=lambda: a.pos()[2] > start_z + 0.05)
        if obj_z() < z0 + 0.02:
            self.retries += 1
            yield from self.hold(8, OPEN, arm)
            yield from self.reach(Goal(a.pos() + [0.0, 0.0, 0.05], arm=arm), tol=0.02, timeout=30)
            return False
        if not self._regrasped and self.wants_regrasp():
            self._regrasped = True
            yield from self.reach(Goal(np.array([xy[0], xy[1], start_z + 0.005]), arm=arm), tol=0.01,
                                  timeout=40, precise=True)
            yield from self.hold(8, OPEN, arm)
            yield from self.reach(Goal(a.pos() + [0.0, 0.0, 0.06], arm=arm), tol=0.02, timeout=30)
            return False
        return True

    # -- driver --------------------------------------------------------------------------------
    def _maybe_pause(self) -> Iterator[None]:
        tier = self.tier
        if tier.pause_prob > 0 and self.rng.random() < tier.pause_prob:
            lo, hi = tier.pause_steps
            for _ in range(int(self.rng.integers(lo, hi + 1))):
                for a in self.arms:
                    a.advance(a.cmd)
                yield

    def _operator_noise(self) -> list[np.ndarray]:
        tier = self.tier
        if tier.pos_noise <= 0 and tier.jitter <= 0:
            return [np.zeros(3) for _ in self.arms]
        rho = 0.95  # ~1 s correlation at 20 Hz
        out = []
        for i in range(len(self.arms)):
            self._noise[i] = rho * self._noise[i] + np.sqrt(1 - rho**2) * tier.pos_noise * self.rng.normal(size=3)
            out.append(self._noise_scale * (self._noise[i] + tier.jitter * self.rng.normal(size=3)))
        return out

    def act(self) -> np.ndarray:
        """Advance the script one step and return the delta action for all arms."""
        # After mj_step the kinematics are a substep old; the controller calls forward() before
        # reading the pose, so do the same and the delta lands its goal exactly on the command.
        self.sim.forward()
        if not self.finished:
            try:
                next(self._script)
            except StopIteration:
                self.finished = True
        if self.finished:  # script over: keep still
            for a in self.arms:
                a.advance(a.cmd)
        noise = self._operator_noise()
        return np.concatenate([a.delta_action(n) for a, n in zip(self.arms, noise)])
