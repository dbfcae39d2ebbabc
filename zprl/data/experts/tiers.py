"""Operator tiers that imitate robomimic's multi-human demonstrations with a scripted expert.

robomimic's "mh" sets mix operators of three skill levels. Here one expert plays all of them; a
tier only changes how carefully it moves: noisier, slower and hesitant targets, detours on the way
to an object, and mistakes it has to recover from (a grasp aimed off the handle, a regrasp in the
air). Only successful episodes are kept, as in the human data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TIER_NAMES = ("better", "okay", "worse")


@dataclass(frozen=True)
class Tier:
    name: str
    # Slowly drifting error on commanded positions (metres, stationary std of an AR(1) process);
    # real operators drift rather than jitter, so the noise is correlated in time.
    pos_noise: float = 0.0
    # Per-step jitter on top of the drift (metres).
    jitter: float = 0.0
    # Per-step chance of starting a pause and its length range in control steps.
    pause_prob: float = 0.0
    pause_steps: tuple[int, int] = (0, 0)
    # Chance that an approach goes through a random waypoint first, and how far it strays (m).
    detour_prob: float = 0.0
    detour_radius: float = 0.0
    # Chance per grasp of aiming off target (then the grasp misses and is retried).
    miss_prob: float = 0.0
    # Chance per episode of setting the object down after lifting and grasping it again.
    regrasp_prob: float = 0.0
    # Speed: fraction of the expert's top speed.
    speed: float = 1.0


EXPERT = Tier("expert")

TIERS = {
    "better": Tier("better", pos_noise=0.002, jitter=0.0005, pause_prob=0.01, pause_steps=(2, 6),
                   detour_prob=0.2, detour_radius=0.06, miss_prob=0.05, regrasp_prob=0.05, speed=0.95),
    "okay": Tier("okay", pos_noise=0.004, jitter=0.001, pause_prob=0.02, pause_steps=(3, 12),
                 detour_prob=0.4, detour_radius=0.09, miss_prob=0.15, regrasp_prob=0.15, speed=0.8),
    "worse": Tier("worse", pos_noise=0.006, jitter=0.0015, pause_prob=0.035, pause_steps=(5, 20),
                  detour_prob=0.7, detour_radius=0.12, miss_prob=0.3, regrasp_prob=0.3, speed=0.65),
}


def get_tier(name: str | None) -> Tier:
    if name is None or name == "expert":
        return EXPERT
    if name not in TIERS:
        raise ValueError(f"unknown operator tier {name!r}; choose one of expert, {', '.join(TIER_NAMES)}")
    return TIERS[name]


def tier_schedule(num: int, rng: np.random.Generator) -> list[str]:
    """Tier of each of ``num`` episodes: equal thirds, shuffled with ``rng``."""
    names = [TIER_NAMES[i % len(TIER_NAMES)] for i in range(num)]
    rng.shuffle(names)
    return names
