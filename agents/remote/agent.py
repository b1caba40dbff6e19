"""RemoteAgent: an agent whose policy runs in a policy server (harness/serve, vla-eval's or openpi's).

    agent=remote agent.url=ws://127.0.0.1:8000 agent.protocol=native            # a vla-harness server
    agent=remote agent.url=ws://gpu-box:8000 agent.protocol=vla_eval \\
        agent.observation.states=[0,1,2,3,4,5,6,14] agent.action.type=absolute agent.action.rotation=axis_angle

* `native`: the served agent's own observation and action, unchanged; the agent takes the served agent's
  spec (cameras, action type, privileged) from the server's hello, so evaluating through it gives what
  evaluating in-process gives. A chain is one session on the server: `new_chain(seed)` travels with its
  first episode start, its later subtasks `reset` the same session (as in-process).
* `vla_eval` / `openpi`: a third-party server; `observation` declares what it reads
  (`ObservationMapping`: cameras under which names, resize, which robot_obs entries as the state,
  the instruction's key) and `action` how its actions read (`ActionConvention`: relative or absolute,
  euler or axis-angle, gripper sign, how much of a chunk to execute).

Each subtask is one episode on the server (`reset()` ends the last one). When the server goes away, the
agent raises `AgentUnavailable` and the evaluation calls `wait_until_available` and runs the chain again;
a server that is not up yet when the agent is built is waited for as long (reconnect_timeout_s).
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import numpy as np

from agents.base import AgentSpec, AgentUnavailable

from .client import open_channel
from .mapping import ActionConvention, ObservationMapping

RETRY_EVERY_S = 0.5


class RemoteAgent:
    def __init__(self, url: str, protocol: str = "native", token: str | None = None, timeout_s: float = 60.0,
                 connect_timeout_s: float = 10.0, reconnect_timeout_s: float = 600.0,
                 observation: dict[str, Any] | None = None, action: dict[str, Any] | None = None) -> None:
        observation, action = _given(observation), _given(action)
        if protocol == "native" and (observation or action):
            raise ValueError("agent.protocol=native sends the harness's own observations and actions: "
                             "agent.observation and agent.action are for vla_eval and openpi servers")
        self.channel = open_channel(protocol, url, token=token, timeout_s=timeout_s, connect_timeout_s=connect_timeout_s)
        self.protocol, self.reconnect_timeout_s = protocol, float(reconnect_timeout_s)
        self.mapping = None if protocol == "native" else ObservationMapping.for_protocol(protocol, **observation)
        self.convention = None if protocol == "native" else ActionConvention(**action)
        self._pending: deque[np.ndarray] = deque()  # the rest of a chunk, executed before the next request
        self._seed: int | None = None
        self._in_episode = self._chain_started = False
        try:
            self.spec = self._spec(self.wait_until_available())
        except BaseException:  # a refused token, a server of another protocol: no connection left open
            self.channel.close()
            raise

    def _spec(self, info: dict[str, Any]) -> AgentSpec:
        served = {"url": self.channel.url, "protocol": self.protocol}
        if self.protocol == "native":
            agent = info.get("agent")
            if not isinstance(agent, dict) or "name" not in agent:
                raise ValueError(f"the server at {self.channel.url} is not a vla-harness native server "
                                 f"(its hello has no agent spec); set agent.protocol to vla_eval or openpi")
            return AgentSpec(name=agent["name"], action_type=agent.get("action_type", "relative"),
                             cameras=tuple(agent.get("cameras", ())), privileged=bool(agent.get("privileged", False)),
                             checkpoint=agent.get("checkpoint"), extra={**agent.get("extra", {}), "served_by": served})
        assert self.mapping is not None and self.convention is not None
        return AgentSpec(name="remote", action_type=self.convention.type, cameras=tuple(self.mapping.cameras),
                         extra={**served, "observation": self.mapping.to_dict(), "action": self.convention.to_dict(),
                                "server": {k: v for k, v in info.items() if isinstance(v, (str, int, float, bool))}})

    def new_chain(self, seed: int) -> None:
        self._seed = int(seed)
        self._chain_started = False

    def reset(self) -> None:
        self._pending.clear()
        if self._in_episode:
            self._in_episode = False
            self.channel.end_episode()

    def step(self, obs: dict[str, Any], instruction: str) -> Any:
        if self._pending:
            return self._pending.popleft()
        if not self.channel.connected:
            self.channel.connect()
        if not self._in_episode:
            self.channel.start_episode(None if self._chain_started else self._seed)
            self._in_episode = self._chain_started = True
        if self.protocol == "native":
            reply = self.channel.act({"obs": obs, "instruction": instruction})
            if not isinstance(reply, dict) or "action" not in reply:
                raise RuntimeError(f"the server at {self.channel.url} replied without an action: {reply!r:.200}")
            action = reply["action"]
            return np.asarray(action, dtype=np.float64) if isinstance(action, np.ndarray) else action
        assert self.mapping is not None and self.convention is not None
        actions = self.convention.decode(self.channel.act(self.mapping.encode(obs, instruction)))
        self._pending.extend(actions[1:])
        return actions[0]

    def planned_tcp_path(self) -> None:
        return None

    def wait_until_available(self, timeout_s: float | None = None) -> dict[str, Any]:
        """(Re)connect, retrying until the server answers (its hello); AgentUnavailable after `timeout_s`
        (default: reconnect_timeout_s) without it."""
        limit = self.reconnect_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + limit
        self._pending.clear()
        self._in_episode = self._chain_started = False  # a new connection: a new session, seeded again
        while True:
            try:
                return self.channel.connect()
            except AgentUnavailable as e:
                if time.monotonic() >= deadline:
                    raise AgentUnavailable(f"{e} (for {limit:g} s: agent.reconnect_timeout_s)") from None
                time.sleep(RETRY_EVERY_S)

    def close(self) -> None:
        self.channel.close()


def _given(fields: dict[str, Any] | None) -> dict[str, Any]:
    """The fields set (configs/agent/remote.yaml lists them all, null meaning the default)."""
    return {k: v for k, v in (fields or {}).items() if v is not None}
