"""Scripted experts that generate robomimic-style demonstrations from privileged simulator state.

``make_expert(task, env, rng, tier)`` returns an expert for a fresh episode (call it after
``env.reset()``); ``expert.act()`` gives the next delta OSC_POSE action.
"""

from __future__ import annotations

import numpy as np

from zprl.data.experts.base import Expert
from zprl.data.experts.can import CanExpert
from zprl.data.experts.lift import LiftExpert
from zprl.data.experts.square import SquareExpert
from zprl.data.experts.transport import TransportExpert
from zprl.data.experts.tiers import EXPERT, TIER_NAMES, TIERS, Tier, get_tier, tier_schedule

EXPERTS: dict[str, type[Expert]] = {
    "lift": LiftExpert,
    "can": CanExpert,
    "square": SquareExpert,
    "transport": TransportExpert,
}


def make_expert(task: str, env, rng: np.random.Generator, tier: str | Tier | None = None) -> Expert:
    if task not in EXPERTS:
        raise ValueError(f"no scripted expert for task {task!r}; available: {', '.join(EXPERTS)}")
    return EXPERTS[task](env, rng, tier if isinstance(tier, Tier) else get_tier(tier))


__all__ = ["EXPERTS", "EXPERT", "TIERS", "TIER_NAMES", "Expert", "Tier", "get_tier", "make_expert",
           "tier_schedule"]
