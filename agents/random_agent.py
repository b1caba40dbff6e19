"""A random agent: uniform relative actions and a random gripper, reproducible per chain.

It is the floor every policy must beat, and a cheap stand-in for a policy when testing the harness.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from agents.base import AgentSpec


class RandomAgent:
    """Arm dims uniform in [-scale, scale]; the gripper is +-1, switching with `gripper_switch_prob` per step.

    scale > 1 produces out-of-range relative actions on purpose (the evaluation counts them).
    `new_chain(seed)` reseeds from the chain's seed and the agent's own, so a chain's actions depend only on
    the two: another `seed` draws another random agent on the same chains.
    """

    def __init__(self, seed: int = 0, scale: float = 1.0, gripper_switch_prob: float = 0.1) -> None:
        if int(seed) < 0:
            raise ValueError(f"RandomAgent.seed must be >= 0, got {seed}")
        if not scale > 0:
            raise ValueError(f"RandomAgent.scale must be > 0, got {scale}")
        if not 0 <= gripper_switch_prob <= 1:
            raise ValueError(f"RandomAgent.gripper_switch_prob must be in [0, 1], got {gripper_switch_prob}")
        self.scale = float(scale)
        self.switch = float(gripper_switch_prob)
        self.seed = int(seed)
        self.spec = AgentSpec(name="random", extra={"seed": seed, "scale": self.scale, "gripper_switch_prob": self.switch})
        self.new_chain(0)

    def new_chain(self, seed: int) -> None:
        # seed 0 draws from the chain's seed alone, as every run before the agent's seed took part
        self.rng = np.random.default_rng(seed if self.seed == 0 else [seed, self.seed])

    def reset(self) -> None:
        self.gripper = 1.0

    def step(self, obs: dict[str, Any], instruction: str) -> np.ndarray:
        if self.rng.random() < self.switch:
            self.gripper = -self.gripper
        return np.r_[self.rng.uniform(-self.scale, self.scale, 6), self.gripper]

    def planned_tcp_path(self) -> np.ndarray | None:
        return None
