"""The agent protocol: `reset()` at the start of each subtask, then `step(obs, instruction) -> action`.

An agent declares what it needs so that the harness renders and passes only that:
  * `cameras`: which of the env's cameras ("static", "gripper") it reads; () renders nothing.
  * `privileged`: True when it reads simulator state a real robot would not have (scene_obs).
  * `action_type`: "relative" (7-d in [-1, 1], gripper +-1) or "absolute" ((pos3, euler3, gripper)).

Agents that are not `privileged` get the observation without `scene_obs`.

Optional hook: `bind_env(description: harness.envs.EnvDescription)`, called whenever the harness pairs the
agent with an env (after building it, and after rebuilding it): the env owns the scene, and an agent that
needs its layout (the scripted expert) reads it from the description.

Optional hook: `new_chain(seed: int)`, called before the first subtask of every evaluation chain (and every
single-task episode) with a seed that depends only on the run's seed and the chain, so that a stochastic
agent gives the same results whichever worker process or rank runs the chain, and whether or not the run
was resumed. The evaluation also seeds Python's, numpy's and (when imported) torch's global RNGs with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

ActionType = Literal["relative", "absolute"]


@dataclass(frozen=True)
class AgentSpec:
    """What an agent is and what it needs, as written into evaluation reports."""

    name: str
    action_type: ActionType = "relative"
    cameras: tuple[str, ...] = ()
    privileged: bool = False
    checkpoint: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Agent(Protocol):
    spec: AgentSpec

    def reset(self) -> None:
        """Called at the start of every subtask."""

    def step(self, obs: dict[str, Any], instruction: str) -> np.ndarray:
        """Return the next 7-d action for the env (relative unless spec.action_type says otherwise)."""

    def planned_tcp_path(self) -> np.ndarray | None:
        """World-frame TCP positions (K, 3) the agent plans to visit next, for videos; None if unknown."""
