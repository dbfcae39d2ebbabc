"""NutAssemblySquare: take the square nut by its handle and drop it over the square peg."""

from __future__ import annotations

import numpy as np
import robosuite.utils.transform_utils as T

from zprl.data.experts.base import CLOSE, OPEN, Expert, Goal, wrap_symmetric, yaw_of_quat

# Grasp point in the nut's frame: the handle's middle; further out when the handle points back at
# the robot, where the hand's tilt would otherwise put a finger on the ring.
HANDLE_OFFSET = np.array([0.054, 0.0, 0.0])
HANDLE_OFFSET_FACING_ROBOT = np.array([0.062, 0.0, 0.0])
PEG_TOP_Z = 0.86  # nut centre height once it is down on the peg


class SquareExpert(Expert):
    env_name = "NutAssemblySquare"

    def script(self):
        raw = self.raw
        nut = raw.obj_body_id["SquareNut"]
        peg = self.body_pos(raw.peg1_body_id)
        peg_yaw = yaw_of_quat(self.body_quat(raw.peg1_body_id))
        safe_z = 1.02
        arm = self.arms[0]

        def handle():
            rot = T.quat2mat(self.body_quat(nut))
            offset = HANDLE_OFFSET_FACING_ROBOT if rot[0, 0] < -0.6 else HANDLE_OFFSET
            return self.body_pos(nut) + rot @ offset

        while True:
            # Fingers close across the handle; the handle is symmetric under a half turn.
            yaw = wrap_symmetric(yaw_of_quat(self.body_quat(nut)), np.pi)
            held = yield from self.pick(handle, yaw, lambda: self.body_pos(nut)[2], approach=0.08,
                                        grasp_dz=-0.005, lift_z=safe_z, min_z=0.9, tol=0.008,
                                        grasp_tol=0.006)
            if not held:
                continue
            xy = arm.cmd[:2].copy()
            yield from self.reach(Goal(np.array([xy[0], xy[1], safe_z])), tol=0.015, timeout=60)

            # Loaded, the arm settles a few millimetres off its command (OSC has no integral
            # term), more than the nut's clearance on the peg; integrate the nut's offset instead.
            bias = np.zeros(3)

            def hand_for(z, integrate=True):
                nut_pos = self.body_pos(nut)
                if integrate:  # not while lowering: contact with the peg moves the nut too
                    err = np.append(peg[:2] - nut_pos[:2], 0.0)
                    bias[:] = np.clip(bias + 0.1 * err, -0.03, 0.03)
                off = arm.pos() - nut_pos
                return np.array([peg[0] + off[0], peg[1] + off[1], z + off[2]]) + bias

            still = [0]

            def settled():
                # centred over the peg for a few steps in a row (a swinging nut passes through the
                # centre) and with the wrist turn finished
                near = np.linalg.norm(self.body_pos(nut)[:2] - peg[:2]) < 0.003
                turned = abs(arm.yaw - arm.yaw_goal) < 1e-6
                still[0] = still[0] + 1 if near and turned else 0
                return still[0] >= 4

            yield from self.detour(0, arm.pos(), np.append(peg[:2], safe_z), min_z=safe_z)
            # the hole is square: turn the nut to the peg's orientation (multiples of a quarter turn)
            turn = -wrap_symmetric(yaw_of_quat(self.body_quat(nut)) - peg_yaw, np.pi / 2)
            yield from self.reach(Goal(lambda: np.append(hand_for(0.0)[:2], safe_z), arm.yaw_goal + turn, CLOSE),
                                  tol=0.004, timeout=150,
                                  until=lambda: settled() or self.body_pos(nut)[2] < 0.87)
            if self.body_pos(nut)[2] < 0.87:  # dropped on the way: let go, back off, start over
                yield from self.hold(8, OPEN)
                yield from self.reach(Goal(np.append(arm.pos()[:2], safe_z)), tol=0.02, timeout=40)
                continue
            yield from self.reach(Goal(lambda: hand_for(PEG_TOP_Z, integrate=False)), tol=0.01, timeout=80,
                                  precise=True, until=lambda: self.body_pos(nut)[2] < PEG_TOP_Z + 0.005)
            yield from self.hold(10, OPEN)
            yield from self.reach(Goal(arm.cmd * [1, 1, 0] + [0, 0, safe_z]), tol=0.02, timeout=60)
            yield from self.hold(10)  # the episode ends here on success; otherwise pick it up again
