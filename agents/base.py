"""The agent protocol: `reset()` at the start of each subtask, then `step(obs, instruction) -> action`.

An agent declares what it needs so that the harness renders and passes only that:
  * `cameras`: which of the env's cameras ("static", "gripper") it reads; () renders nothing.
  * `privileged`: True when it reads simulator state a real robot would not have (scene_obs).
  * `action_type`: "relative" (7-d in [-1, 1], gripper +-1) or "absolute" ((pos3, euler3, gripper)).

Agents that are not `privileged` get the observation without `scene_obs`.

Optional hook: `bind_env(description: harness.envs.EnvDescription)`, called whenever the harness pairs the
agent with an env (after building it, and after rebuilding it): the env owns the scene, and an agent that
needs its layout (the scripted expert) reads it from the description.
A policy server (harness/serve) serves a `SessionPolicy`: one model stepping many sessions (episodes)
together; `agents.make_policy` builds one for any agent (`AgentSessions` wraps an agent per session).

An agent whose service can go away (`agents.remote.RemoteAgent`) raises `AgentUnavailable` when it does:
the evaluation waits for it to come back (`wait_until_available(timeout_s)`) and runs the chain again.

Optional hook: `new_chain(seed: int)`, called before the first subtask of every evaluation chain (and every
single-task episode) with a seed that depends only on the run's seed and the chain, so that a stochastic
agent gives the same results whichever worker process or rank runs the chain, and whether or not the run
was resumed. The evaluation also seeds Python's, numpy's and (when imported) torch's global RNGs with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Protocol, runtime_checkable

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


class AgentUnavailable(RuntimeError):
    """The agent's service cannot be reached (its policy server went away): not the subtask's failure."""


@runtime_checkable
class Agent(Protocol):
    spec: AgentSpec

    def reset(self) -> None:
        """Called at the start of every subtask."""

    def step(self, obs: dict[str, Any], instruction: str) -> np.ndarray:
        """Return the next 7-d action for the env (relative unless spec.action_type says otherwise)."""

    def planned_tcp_path(self) -> np.ndarray | None:
        """World-frame TCP positions (K, 3) the agent plans to visit next, for videos; None if unknown."""


@runtime_checkable
class SessionPolicy(Protocol):
    """A policy that steps many sessions together; a session is one episode's state."""

    spec: AgentSpec

    def new_session(self) -> Any:
        """A fresh session."""

    def reset(self, session: Any) -> None:
        """The start of a subtask in `session`."""

    def step_batch(self, sessions: list[Any], observations: list[dict[str, Any]], instructions: list[str]) -> list[Any]:
        """The next action of every session (what `Agent.step` returns), stepped together. Either it raises
        and no session was stepped (a server then steps them one by one), or a session whose step failed
        gets its exception in its place."""

    def close_session(self, session: Any) -> None:
        """The session is over; what it holds may be reused."""


def _step_or_error(agent: Agent, obs: dict[str, Any], instruction: str) -> Any:
    try:
        return agent.step(obs, instruction)
    except Exception as e:  # noqa: BLE001 - this session's failure, not the others'
        return e


class AgentSessions:
    """Any agent as a `SessionPolicy`: one agent object per session, stepped one after the other. Agents of
    closed sessions are kept and reused by later ones (as an evaluation worker reuses its agent)."""

    def __init__(self, build: Callable[[], Agent], first: Agent | None = None) -> None:
        self._build = build
        self._idle: list[Agent] = [first if first is not None else build()]
        self.spec = self._idle[0].spec

    def new_session(self) -> Agent:
        return self._idle.pop() if self._idle else self._build()

    def reset(self, session: Agent) -> None:
        session.reset()

    def new_chain(self, session: Agent, seed: int) -> None:
        if hasattr(session, "new_chain"):
            session.new_chain(seed)

    def step_batch(self, sessions: list[Agent], observations: list[dict[str, Any]], instructions: list[str]) -> list[Any]:
        return [_step_or_error(s, o, i) for s, o, i in zip(sessions, observations, instructions)]

    def close_session(self, session: Agent) -> None:
        self._idle.append(session)
