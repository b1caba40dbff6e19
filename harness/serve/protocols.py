"""The server's side of each wire protocol: incoming messages -> events, actions and errors -> replies.

    native    vla-eval's messages; `episode_start {seed}` opens a session for a chain (the seed goes to
              the agent's `new_chain`), `episode_start {}` (no seed) starts the chain's next subtask in
              the same session (the agent's `reset`, as in-process: a stochastic agent's generator runs
              on), `observation {obs, instruction}` -> `action {action}` (the agent's own observation and
              action), `episode_end` closes the session; the hello reply carries the agent's spec.
    vla_eval  vla-eval's RFC-0002: `episode_start` opens a session (seeded like native's when its payload
              has an integer `seed`; vla-eval's runners send none), `observation {images, states,
              task_description, episode_restart?}` -> `action {actions}`, `episode_end` closes it. The
              wire layout is the server's `observation` mapping (agents.remote.mapping).
    openpi    openpi's: metadata on connect, then observation dict -> {"actions": (1, 7)}; a connection is one
              session, a new episode begins when the instruction changes or the observation carries
              `"reset": true`. Errors are text messages, as openpi's clients expect.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from agents.remote.mapping import ObservationMapping
from agents.remote.wire import WireError, pack_message, pack_openpi, unpack_message, unpack_openpi

PROTOCOL_VERSION = 1


@dataclass
class Event:
    """What a client asked: kind is hello | start | observe | end | ignore."""

    kind: str
    seq: int = 0
    seed: int | None = None  # start (native)
    obs: dict[str, Any] | None = None  # observe: the env-style observation
    instruction: str = ""
    restart: bool = False  # observe: a new episode begins with this observation
    continues: bool = False  # start (native, no seed): the next subtask in the connection's session


class Codec:
    """Reads a protocol's messages and writes its replies."""

    name = ""
    session_per_connection = False  # openpi: no episode messages, the connection is the session

    def __init__(self, mapping: ObservationMapping | None) -> None:
        self.mapping = mapping

    def greeting(self, info: dict[str, Any]) -> bytes | None:
        return None

    def wire_names(self) -> dict[str, str]:
        """Env observation key -> the key the client sent it under (none for the native protocol: the same)."""
        return self.mapping.wire_names() if self.mapping is not None else {}

    def read(self, data: Any) -> Event:
        raise NotImplementedError

    def hello(self, event: Event, info: dict[str, Any]) -> bytes:
        raise NotImplementedError

    def action(self, event: Event, action: Any) -> bytes:
        raise NotImplementedError

    def error(self, event: Event | None, text: str) -> bytes | str:
        raise NotImplementedError


class MessageCodec(Codec):
    """vla-eval's messages; `_observation` reads the payload (the protocols differ there)."""

    def read(self, data: Any) -> Event:
        message = unpack_message(data)
        seq = message.seq
        if message.type == "hello":
            return Event("hello", seq)
        if message.type == "episode_start":
            return Event("start", seq, seed=_seed(message.payload.get("seed")))
        if message.type == "episode_end":
            return Event("end", seq)
        if message.type == "error":
            return Event("ignore", seq)  # a client's report: nothing to answer
        if message.type == "observation":
            return self._observation(message.payload, seq)
        raise WireError(f"a client sends no {message.type!r} messages")

    def _observation(self, payload: dict[str, Any], seq: int) -> Event:
        raise NotImplementedError

    def hello(self, event: Event, info: dict[str, Any]) -> bytes:
        return pack_message("hello", {**info, "protocol_version": PROTOCOL_VERSION}, event.seq)

    def error(self, event: Event | None, text: str) -> bytes:
        return pack_message("error", {"error": text}, event.seq if event else 0)


class NativeCodec(MessageCodec):
    name = "native"

    def read(self, data: Any) -> Event:
        event = super().read(data)
        event.continues = event.kind == "start" and event.seed is None
        return event

    def _observation(self, payload: dict[str, Any], seq: int) -> Event:
        obs, instruction = payload.get("obs"), payload.get("instruction")
        if not isinstance(obs, dict) or not isinstance(instruction, str):
            raise WireError("a native observation is {obs: map, instruction: string}")
        return Event("observe", seq, obs=obs, instruction=instruction)

    def action(self, event: Event, action: Any) -> bytes:
        return pack_message("action", {"action": _plain(action)}, event.seq)


class VlaEvalCodec(MessageCodec):
    name = "vla_eval"

    def _observation(self, payload: dict[str, Any], seq: int) -> Event:
        obs, instruction = self.mapping.decode(payload)
        return Event("observe", seq, obs=obs, instruction=instruction, restart=_true(payload.get("episode_restart")))

    def action(self, event: Event, action: Any) -> bytes:
        return pack_message("action", {"actions": _array(action)}, event.seq)


class OpenPICodec(Codec):
    name = "openpi"
    session_per_connection = True

    def __init__(self, mapping: ObservationMapping | None) -> None:
        super().__init__(mapping)
        self.instruction: str | None = None  # the connection's (the session's) last instruction

    def greeting(self, info: dict[str, Any]) -> bytes:
        return pack_openpi(info)

    def read(self, data: Any) -> Event:
        payload = unpack_openpi(data)
        if not isinstance(payload, dict):
            raise WireError(f"an openpi request is an observation map, got {type(payload).__name__}")
        payload = {k.decode() if isinstance(k, bytes) else k: v for k, v in payload.items()}
        obs, instruction = self.mapping.decode(payload)
        changed = self.instruction is not None and instruction != self.instruction  # openpi has no episode messages
        self.instruction = instruction
        return Event("observe", obs=obs, instruction=instruction, restart=_true(payload.get("reset")) or changed)

    def action(self, event: Event, action: Any) -> bytes:
        # openpi's replies are chunks, (horizon, action dim): its clients (ActionChunkBroker) index the first axis;
        # the served agent's one action is a chunk of one
        actions = _array(action)
        return pack_openpi({"actions": actions[None] if actions.ndim == 1 else actions})

    def error(self, event: Event | None, text: str) -> str:
        return text


CODECS: dict[str, type[Codec]] = {"native": NativeCodec, "vla_eval": VlaEvalCodec, "openpi": OpenPICodec}


def make_codec(protocol: str, observation: dict[str, Any] | None = None) -> Codec:
    """The protocol's codec; `observation` overrides the wire layout of vla_eval / openpi requests."""
    if protocol not in CODECS:
        raise ValueError(f"protocol must be one of {sorted(CODECS)}, got {protocol!r}")
    observation = {k: v for k, v in (observation or {}).items() if v is not None}  # null: the usual layout
    if protocol == "native":
        if observation:
            raise ValueError("protocol=native reads the harness's own observations: observation is for vla_eval and openpi")
        return NativeCodec(None)
    client_side = sorted({"resize", "states"} & set(observation))
    if client_side:  # decode reads the images and the state vector as they arrive: these would do nothing here
        raise ValueError(f"observation.{' and observation.'.join(client_side)}: what a client sends (agent=remote "
                         "agent.observation...); a server reads the images and the state as they arrive")
    return CODECS[protocol](ObservationMapping.for_protocol(protocol, **observation))


def _seed(value: Any) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise WireError(f"episode_start seed must be an integer or null, got {value!r}")
    return value


def _true(flag: Any) -> bool:
    """A restart flag as the clients send it: a bool, or numpy's (openpi-client packs numpy scalars as such)."""
    return isinstance(flag, (bool, np.bool_)) and bool(flag)


def _array(action: Any) -> np.ndarray:
    try:
        return np.asarray(action, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise TypeError(f"the agent's action cannot be sent as an array: {e}") from None


def _plain(action: Any) -> Any:
    """An agent's action as msgpack can carry it: arrays as they are, tuples as lists."""
    if isinstance(action, (tuple, list)):
        return [_plain(a) for a in action]
    return action
