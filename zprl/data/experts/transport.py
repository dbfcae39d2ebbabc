"""TwoArmTransport: robot0 brings the hammer across, robot1 clears the trash and puts the hammer away.

The two Pandas stand at opposite ends (robot0 at -y, robot1 at +y) and neither reaches the other's
table, so the hammer changes hands over the gap between the tables. While robot0 takes the lid off
the start bin and picks the hammer up by one end of its handle, robot1 moves the trash cube from
the target bin into the trash bin; then robot0 holds the hammer out along the line between the
robots, robot1 takes it by the other end of the handle, robot0 lets go, and robot1 lowers the
hammer diagonally into the target bin (the hammer is almost as long as the bin is wide). Success
needs the trash on the trash bin's floor and the hammer on the target bin's floor at once.

Each arm runs its own script and ``together`` steps them in lock-step, one advance per arm per
control step, so the arms work in parallel without sharing a phase.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Iterator

import numpy as np

from zprl.data.experts.base import CLOSE, OPEN, Expert, PosLike, wrap_symmetric
from zprl.data.experts.tiers import EXPERT, Tier

# Where the two hands hold the hammer handle, along the handle axis from its centre (the head is at
# +0.1 and beyond): one at the bare end, one near the head, far enough apart for two hands.
GRIP_BARE = -0.07
GRIP_HEAD = 0.06
CARRY_Z = 1.12  # hand height for carrying: clears bin walls (~0.95) and lid handles
HANDOVER_Z = 1.1  # about shoulder height, where a Panda reaches furthest
# Objects inside a bin are approached from this far above, over the bin's 0.15 m walls.
IN_BIN_APPROACH = 0.17
# The lid goes down on the free half of robot0's table, on the far side from the robot and let go
# of a hand's width above the table: lowering a hand low and close to the robot's base folds the
# Panda until its forearm points straight down, where the two wrist roll joints turn about almost
# the same axis and wind up against each other (joint 7 at its limit), and a wound wrist bends the
# wrong way later and cannot reach out to the handover.
LID_ASIDE = np.array([-0.4, 0.1])
LID_DROP_Z = 0.15
WOUND = 1.0  # joint 5 turned this far (rad) counts as a wound wrist
UNWIND_REACH, UNWIND_DZ = (0.27, 0.31, 0.23), 0.05  # where a wound wrist unwinds: hand in front of the base
# The trash cube counts as dropped when it is this far below the hand that carries it (held, the
# two are within a centimetre); a dropped or missed cube is picked up again, TRASH_TRIES times in all.
TRASH_LOST_DZ = 0.05
TRASH_TRIES = 3


def eased(tier: Tier) -> Tier:
    """The tier with half its slowdown, hesitation and mistakes (its drift kept): the expert alone
    needs ~500 of the 700 steps here, so a full-strength worse operator would run out of time.
    Tiers keep their order."""
    return replace(tier, speed=1.0 - (1.0 - tier.speed) / 2, pause_prob=tier.pause_prob / 2,
                   detour_prob=tier.detour_prob / 2, miss_prob=tier.miss_prob / 2,
                   regrasp_prob=tier.regrasp_prob / 2)


def _angle(v: np.ndarray) -> float:
    return float(np.arctan2(v[1], v[0]))


def _point(p: PosLike) -> np.ndarray:
    return np.asarray(p() if callable(p) else p, dtype=float)


class TransportExpert(Expert):
    env_name = "TwoArmTransport"
    num_arms = 2

    def __init__(self, env, rng: np.random.Generator, tier: Tier = EXPERT):
        super().__init__(env, rng, eased(tier))
        self._driven = [False] * self.num_arms  # which arms a script advanced this step
        self._precise = [False] * self.num_arms
        sim, tg = self.sim, self.raw.transport
        self.tg = tg

        def geom(obj, suffix):
            return sim.model.geom_name2id(next(g for g in obj.contact_geoms if g.endswith(suffix)))

        self.handle_geom = geom(tg.payload, "handle")
        self.lid_handle_geom = sim.model.geom_name2id(tg.lid.handle_geoms[0])
        # Direction the fingers close along at yaw 0, per arm (measured, not assumed, so the
        # grasp yaw is right whatever way the hand is mounted).
        self._finger_angle = []
        for robot in self.raw.robots:
            pads = robot.gripper.important_geoms
            left = sim.data.geom_xpos[sim.model.geom_name2id(pads["left_fingerpad"][0])]
            right = sim.data.geom_xpos[sim.model.geom_name2id(pads["right_fingerpad"][0])]
            self._finger_angle.append(_angle(left - right))

    # -- scene ---------------------------------------------------------------------------------
    def handle_axis(self) -> np.ndarray:
        """Unit vector along the hammer handle, pointing at the head."""
        return self.sim.data.geom_xmat[self.handle_geom].reshape(3, 3)[:, 2].copy()

    def handle_point(self, along: float) -> np.ndarray:
        return self.sim.data.geom_xpos[self.handle_geom].copy() + along * self.handle_axis()

    def hammer_z(self) -> float:
        return float(self.sim.data.geom_xpos[self.handle_geom][2])

    def fingers_across(self, arm: int, direction_angle: float) -> float:
        """Yaw (closest to the reset pose) at which arm's fingers close across a bar lying along
        ``direction_angle``."""
        return wrap_symmetric(direction_angle + np.pi / 2 - self._finger_angle[arm], np.pi)

    # -- per-arm primitives (each yields once per control step after advancing only its arm) ----
    def move(self, i: int, target: PosLike, yaw: float | None = None, grip: float | None = None,
             tol: float = 0.01, rot_tol: float = 0.06, timeout: int = 80, precise: bool = False,
             until: Callable[[], bool] | None = None) -> Iterator[None]:
        arm = self.arms[i]
        if yaw is not None:
            arm.yaw_goal = yaw
        if grip is not None:
            arm.grip = grip
        self._precise[i] = precise
        for _ in range(timeout):
            p = _point(target)
            arm.advance(p, self.tier.speed)
            self._driven[i] = True
            yield
            if until is not None and until():
                break
            if arm.reached(p, tol, rot_tol):
                break
        self._precise[i] = False

    def wait(self, i: int, steps: int, grip: float | None = None,
             until: Callable[[], bool] | None = None) -> Iterator[None]:
        arm = self.arms[i]
        if grip is not None:
            arm.grip = grip
        for _ in range(steps):
            if until is not None and until():
                return
            arm.advance(arm.cmd, self.tier.speed)
            self._driven[i] = True
            yield

    def wander(self, i: int, start: np.ndarray, end: np.ndarray, min_z: float) -> Iterator[None]:
        """The tier's detour, for one arm."""
        tier = self.tier
        if tier.detour_prob <= 0 or self.rng.random() >= tier.detour_prob:
            return
        off = self.rng.normal(size=3)
        off[2] = abs(off[2])
        off *= tier.detour_radius / max(np.linalg.norm(off), 1e-6)
        way = (np.asarray(start) + np.asarray(end)) / 2.0 + off
        way[2] = max(way[2], min_z)
        yield from self.move(i, way, tol=0.03, timeout=60)

    def grab(self, i: int, point: Callable[[], np.ndarray], yaw: float, obj_z: Callable[[], float],
             approach: float = 0.08, grasp_dz: float = 0.0, lift_z: float = CARRY_Z, min_z: float = 1.0,
             lift_check: float = 0.02, mistakes: bool = True) -> Iterator[None]:
        """Approach from above, close on ``point``, lift; returns True if the object came up."""
        arm = self.arms[i]
        miss = self.grasp_miss_offset() if mistakes else np.zeros(3)

        def above():
            return point() + miss + [0.0, 0.0, approach]

        yield from self.wander(i, arm.pos(), above(), min_z)
        yield from self.move(i, above, yaw, OPEN, tol=0.01, timeout=100)
        yield from self.move(i, lambda: point() + miss + [0.0, 0.0, grasp_dz], tol=0.007, timeout=50,
                             precise=True)
        yield from self.wait(i, 10, CLOSE)
        z0, start_z = obj_z(), arm.pos()[2]
        xy = arm.cmd[:2].copy()
        yield from self.move(i, np.array([xy[0], xy[1], lift_z]), tol=0.02, timeout=60,
                             until=lambda: arm.pos()[2] > start_z + 0.06)
        if obj_z() < z0 + lift_check:
            self.retries += 1
            yield from self.wait(i, 8, OPEN)
            yield from self.move(i, arm.pos() + [0.0, 0.0, 0.06], tol=0.02, timeout=30)
            return False
        if mistakes and not self._regrasped and self.wants_regrasp():
            self._regrasped = True
            yield from self.move(i, np.array([xy[0], xy[1], start_z + 0.01]), tol=0.01, timeout=40,
                                 precise=True)
            yield from self.wait(i, 8, OPEN)
            yield from self.move(i, arm.pos() + [0.0, 0.0, 0.06], tol=0.02, timeout=30)
            return False
        # straight up before going anywhere: a loaded hand swept sideways drags over bin walls
        yield from self.move(i, np.array([xy[0], xy[1], lift_z]), tol=0.02, timeout=40)
        return True

    def wrist_twist(self, i: int) -> float:
        """Angle of arm i's forearm roll joint (joint 5), 0 at reset."""
        robot = self.raw.robots[i]
        return float(self.sim.data.qpos[robot._ref_joint_pos_indexes[4]])

    def unwind(self, i: int) -> Iterator[None]:
        """Bring a wound wrist back (see LID_ASIDE): with the hand low and close in front of the
        robot the forearm hangs straight down, where joints 5 and 7 turn about one axis and OSC's
        pull toward the reset joints can turn them back; leave as soon as joint 5 is near zero."""
        if abs(self.wrist_twist(i)) < WOUND:
            return
        robot = self.raw.robots[i]
        base = self.sim.data.body_xpos[self.sim.model.body_name2id(robot.robot_model.root_body)]
        out = -np.sign(base[1])  # both robots face the gap between the tables at y = 0
        for reach in UNWIND_REACH:  # how far out it unwinds varies: try a few spots in turn
            spot = np.array([base[0], base[1] + out * reach, base[2] + UNWIND_DZ])
            yield from self.move(i, spot, tol=0.005, timeout=50, until=lambda: abs(self.wrist_twist(i)) < 0.35)
            if abs(self.wrist_twist(i)) < 0.35:
                return

    # -- lock-step driver ----------------------------------------------------------------------
    def together(self, *scripts: Iterator[None]) -> Iterator[None]:
        """Step each arm script once per control step until all have finished; an arm whose
        script is done (or idle this step) holds its pose."""
        live = list(scripts)
        while live:
            yield from self._maybe_pause()
            self._driven = [False] * self.num_arms
            still = []
            for s in live:
                try:
                    next(s)
                    still.append(s)
                except StopIteration:
                    pass
            live = still
            for i, arm in enumerate(self.arms):
                if not self._driven[i]:
                    arm.advance(arm.cmd, self.tier.speed)
            self._noise_scale = 0.3 if any(self._precise) else 1.0
            yield

    # -- the task ------------------------------------------------------------------------------
    def script(self):
        tg = self.tg
        arm0, arm1 = self.arms
        middle = (arm0.pos() + arm1.pos()) / 2.0  # the gap between the tables
        handover = np.array([middle[0], middle[1], HANDOVER_Z])
        toward = _angle(arm1.pos() - arm0.pos())  # direction from robot0 to robot1
        to1 = np.array([np.cos(toward), np.sin(toward), 0.0])
        state = {"hammer_up": False, "trash_done": False}  # shared between the two arm scripts

        def robot0():
            # 1. lid off: fingers across the handle bar, set it down on the free half of the table
            lid_axis = self.sim.data.geom_xmat[self.lid_handle_geom].reshape(3, 3)[:, 1]
            lid_yaw = self.fingers_across(0, _angle(lid_axis))
            handle = lambda: self.sim.data.geom_xpos[self.lid_handle_geom].copy()  # noqa: E731
            start_bin = handle()
            for _ in range(3):
                lifted = yield from self.grab(0, handle, lid_yaw, lambda: handle()[2], approach=0.07,
                                             grasp_dz=0.004, lift_z=CARRY_Z + 0.05, mistakes=False)
                if lifted:
                    break
            aside = start_bin[:2] + LID_ASIDE
            table_z = self.raw.table_offsets[0][2]
            yield from self.move(0, np.append(aside, CARRY_Z + 0.05), tol=0.03, timeout=90)
            yield from self.move(0, np.append(aside, table_z + LID_DROP_Z), tol=0.02, timeout=50)
            yield from self.wait(0, 8, OPEN)
            yield from self.move(0, arm0.pos() + [0.0, 0.0, 0.08], tol=0.02, timeout=30)

            # 2. the hammer, by the end that will face robot0 at the handover: the handle ends up
            # along the line between the robots, head whichever way needs the smaller wrist turn
            while True:
                a = _angle(self.handle_axis())
                if abs(wrap_symmetric(toward - a, 2 * np.pi)) <= abs(wrap_symmetric(toward + np.pi - a, 2 * np.pi)):
                    state.update(head=toward, along0=GRIP_BARE, along1=GRIP_HEAD)
                else:
                    state.update(head=toward + np.pi, along0=GRIP_HEAD, along1=GRIP_BARE)
                turn = wrap_symmetric(state["head"] - a, 2 * np.pi)
                yaw_g = self.fingers_across(0, a)
                yaw_g = min((yaw_g, yaw_g - np.pi, yaw_g + np.pi), key=lambda y: max(abs(y), abs(y + turn)))
                held = yield from self.grab(0, lambda: self.handle_point(state["along0"]), yaw_g, self.hammer_z,
                                            approach=IN_BIN_APPROACH, grasp_dz=0.0, lift_z=CARRY_Z)
                if held:
                    break

            # 3. hold it out over the gap along the line between the robots, and keep still
            def hand_for(centre):
                return centre + (arm0.pos() - self.handle_point(0.0))

            turn = wrap_symmetric(state["head"] - _angle(self.handle_axis()), 2 * np.pi)
            yield from self.move(0, lambda: hand_for(handover), yaw=arm0.yaw + turn, tol=0.006, timeout=150)
            yield from self.wait(0, 15, until=lambda: np.linalg.norm(self.handle_point(0.0) - handover) < 0.01)
            state["hammer_up"] = True
            # 4. let go once robot1 has it
            while not state.get("taken"):
                yield from self.wait(0, 1)
            yield from self.wait(0, 10, OPEN)
            state["released"] = True
            # up off the handle before backing away: backing along the handle with the hand near the
            # head drags the hammer out of robot1's hand
            yield from self.move(0, arm0.pos() + [0.0, 0.0, 0.06], tol=0.02, timeout=25)
            yield from self.move(0, arm0.pos() - 0.15 * to1, tol=0.02, timeout=40)

        def robot1():
            # 1. trash cube from the target bin into the trash bin. The lift check can pass on a cube
            # held by one edge that then slips out on the way up or across (it falls back into the
            # target bin): a cube that leaves the hand, or is not on the trash bin's floor after the
            # drop, is picked up again from wherever it lies.
            trash = lambda: tg.trash_pos  # noqa: E731
            lost = lambda: arm1.pos()[2] - tg.trash_pos[2] > TRASH_LOST_DZ  # noqa: E731
            drop = tg.trash_bin_pos
            for _ in range(TRASH_TRIES):
                while True:
                    cube_yaw = _angle(self.sim.data.body_xmat[tg.trash_body_id].reshape(3, 3)[:, 0])
                    yaw = wrap_symmetric(cube_yaw - self._finger_angle[1], np.pi / 2)
                    held = yield from self.grab(1, trash, yaw, lambda: tg.trash_pos[2], approach=IN_BIN_APPROACH,
                                                grasp_dz=-0.003, lift_z=CARRY_Z)
                    if held and not lost():
                        break
                    if held:  # up, but the cube stayed behind
                        self.retries += 1
                        yield from self.wait(1, 8, OPEN)
                yield from self.move(1, lambda: np.append(drop[:2] + arm1.pos()[:2] - tg.trash_pos[:2], CARRY_Z),
                                     tol=0.02, timeout=90,
                                     until=lambda: np.linalg.norm(tg.trash_pos[:2] - drop[:2]) < 0.02 or lost())
                yield from self.wait(1, 10, OPEN)
                yield from self.wait(1, 20, until=lambda: tg.trash_in_trash_bin)
                if tg.trash_in_trash_bin:
                    break
                self.retries += 1
                yield from self.move(1, arm1.pos() + [0.0, 0.0, 0.05], tol=0.02, timeout=15)
            state["trash_done"] = True
            # the trash pick low in the target bin can wind robot1's wrist the same way
            yield from self.move(1, arm1.pos() + [0.0, 0.0, 0.05], tol=0.02, timeout=15)
            yield from self.unwind(1)

            # 2. wait above the handover point, then take the hammer near its head
            near = handover + 0.12 * to1 + [0.0, 0.0, 0.10]
            while not state["hammer_up"]:
                yield from self.move(1, near, yaw=0.0, tol=0.01, timeout=1)
            axis = self.handle_axis()
            yaw_t = self.fingers_across(1, _angle(axis))
            grip_pt = lambda: self.handle_point(state["along1"])  # noqa: E731
            yield from self.move(1, lambda: grip_pt() + [0.0, 0.0, 0.08], yaw=yaw_t, grip=OPEN, tol=0.008,
                                 timeout=100)
            yield from self.move(1, grip_pt, tol=0.006, timeout=60, precise=True)
            yield from self.wait(1, 12, CLOSE)
            state["taken"] = True
            while not state.get("released"):
                yield from self.wait(1, 1)
            yield from self.wait(1, 5)

            # 3. into the target bin, turned diagonally
            target = tg.target_bin_pos
            yield from self.move(1, arm1.pos() + [0.0, 0.0, 0.04], tol=0.02, timeout=20)
            diag = min((np.pi / 4, -np.pi / 4), key=lambda d: abs(arm1.yaw_goal + d))

            def hand_over_bin(z):
                return np.append(target[:2] + arm1.pos()[:2] - self.handle_point(0.0)[:2], z)

            yield from self.move(1, lambda: hand_over_bin(CARRY_Z), yaw=arm1.yaw_goal + diag, tol=0.015,
                                 timeout=120,
                                 until=lambda: np.linalg.norm(self.handle_point(0.0)[:2] - target[:2]) < 0.015
                                 and abs(arm1.yaw - arm1.yaw_goal) < 1e-6)
            yield from self.move(1, lambda: hand_over_bin(target[2] + 0.07), tol=0.01, timeout=60,
                                 until=lambda: self.hammer_z() < target[2] + 0.05)
            yield from self.wait(1, 10, OPEN)
            yield from self.move(1, arm1.pos() + [0.0, 0.0, 0.12], tol=0.02, timeout=40)

        yield from self.together(robot0(), robot1())
        for _ in range(10):  # settle
            yield from self.hold(1)
