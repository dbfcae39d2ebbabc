"""Lift: pick the cube up off the table."""

from __future__ import annotations

import numpy as np

from zprl.data.experts.base import CLOSE, Expert, Goal, wrap_symmetric, yaw_of_quat


class LiftExpert(Expert):
    env_name = "Lift"

    def script(self):
        raw = self.raw
        cube = raw.cube_body_id
        table_z = raw.model.mujoco_arena.table_offset[2]
        arm = self.arms[0]
        while True:
            # The cube looks the same every quarter turn: take the nearest-to-zero grasp yaw.
            yaw = wrap_symmetric(yaw_of_quat(self.body_quat(cube)), np.pi / 2)
            held = yield from self.pick(lambda: self.body_pos(cube), yaw, lambda: self.body_pos(cube)[2],
                                        approach=0.08, grasp_dz=-0.005, lift_z=table_z + 0.25,
                                        min_z=table_z + 0.06)
            if held:
                break
        xy = arm.cmd[:2].copy()
        yield from self.reach(Goal(np.array([xy[0], xy[1], table_z + 0.25]), grip=CLOSE), tol=0.02, timeout=100)
        yield from self.hold(40)
