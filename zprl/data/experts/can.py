"""PickPlaceCan: carry the can into its compartment of the right-hand bin."""

from __future__ import annotations

import numpy as np

from zprl.data.experts.base import CLOSE, OPEN, Expert, Goal


class CanExpert(Expert):
    env_name = "PickPlaceCan"

    def script(self):
        raw = self.raw
        can = raw.obj_body_id["Can"]
        goal_xy = raw.target_bin_placements[raw.object_to_id["can"]][:2].copy()
        bin_z = raw.bin2_pos[2]
        safe_z = bin_z + 0.22
        arm = self.arms[0]
        while True:
            # A can is round: no wrist turn needed (yaw 0 keeps the fingers across it).
            held = yield from self.pick(lambda: self.body_pos(can), 0.0, lambda: self.body_pos(can)[2],
                                        approach=0.10, grasp_dz=0.0, lift_z=safe_z, min_z=bin_z + 0.12)
            if not held:
                continue
            xy = arm.cmd[:2].copy()
            yield from self.reach(Goal(np.array([xy[0], xy[1], safe_z])), tol=0.02, timeout=60)

            def over_goal():
                # aim the can, not the hand, at the compartment (the grasp is rarely centred)
                off = arm.pos()[:2] - self.body_pos(can)[:2]
                return np.array([goal_xy[0] + off[0], goal_xy[1] + off[1], safe_z])

            yield from self.detour(0, arm.pos(), over_goal(), min_z=safe_z)
            # a loaded arm sags a little under OSC, so judge arrival by where the can is
            yield from self.reach(Goal(over_goal, grip=CLOSE), tol=0.03, timeout=150,
                                  until=lambda: np.linalg.norm(self.body_pos(can)[:2] - goal_xy) < 0.02)
            if self.body_pos(can)[2] < bin_z + 0.05:  # dropped on the way: back off, pick it up again
                yield from self.hold(8, OPEN)
                yield from self.reach(Goal(np.append(arm.pos()[:2], safe_z)), tol=0.02, timeout=40)
                continue
            yield from self.reach(Goal(lambda: over_goal() - [0.0, 0.0, 0.10]), tol=0.02, timeout=40,
                                  until=lambda: self.body_pos(can)[2] < bin_z + 0.13)
            yield from self.hold(10, OPEN)
            # success also needs the hand clear of the can
            yield from self.reach(Goal(arm.cmd + [0.0, 0.0, 0.12]), tol=0.02, timeout=60)
            yield from self.hold(10)  # the episode ends here on success; otherwise pick it up again
