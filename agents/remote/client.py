"""A WebSocket connection from the remote agent to a policy server, one class per wire protocol.

    channel = open_channel("vla_eval", "ws://127.0.0.1:8000", token=None, timeout_s=60)
    info = channel.connect()            # the server's hello / metadata
    channel.start_episode(seed)         # native and vla-eval's: an episode (a subtask) starts
    reply = channel.act(wire_obs)       # one observation -> the server's reply payload
    channel.end_episode(); channel.close()

What goes wrong is told apart, because the evaluation treats each differently:
  * the server cannot be reached or the connection drops: `AgentUnavailable` (the chain runs again once
    the server is back);
  * no reply within `timeout_s`: `TimeoutError` (that subtask fails with agent_error; the connection is
    closed, so a late reply cannot be taken for the next one);
  * the server refuses the token: `PermissionError`; the server answers with an error: `RuntimeError`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from agents.base import AgentUnavailable

from .wire import Message, WireError, pack_message, pack_openpi, unpack_message, unpack_openpi

CLIENT_MAX_MESSAGE_BYTES = 64 * 2**20  # replies are actions: far below this


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vla-harness")
    except PackageNotFoundError:
        return "unknown"


class Channel:
    """The connection and what every protocol shares; subclasses speak their protocol."""

    protocol = ""

    def __init__(self, url: str, token: str | None = None, timeout_s: float = 60.0, connect_timeout_s: float = 10.0):
        parts = urlsplit(str(url))
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ValueError(f"agent.url must be ws://HOST:PORT or wss://HOST:PORT, got {url!r}")
        if not timeout_s > 0 or not connect_timeout_s > 0:
            raise ValueError(f"agent.timeout_s and connect_timeout_s must be > 0, got {timeout_s}, {connect_timeout_s}")
        self.url, self.token = str(url), token
        self.timeout_s, self.connect_timeout_s = float(timeout_s), float(connect_timeout_s)
        self.ws: Any = None
        self.seq = 0
        self._start_seq: int | None = None  # the last episode_start's (its error, if any, answers what follows it)

    @property
    def connected(self) -> bool:
        return self.ws is not None

    def connect(self) -> dict[str, Any]:
        """Open the connection; returns what the server says about itself."""
        import websockets.exceptions
        from websockets.sync.client import connect

        self.close()
        headers = {"Authorization": f"Api-Key {self.token}"} if self.token else None
        try:
            # __enter__: the connection itself on every websockets version (17 deprecates using the
            # return value of connect() directly; before 17 it is the connection, whose __enter__ is itself)
            self.ws = connect(self.url, additional_headers=headers, open_timeout=self.connect_timeout_s,
                              max_size=CLIENT_MAX_MESSAGE_BYTES, compression=None, ping_interval=None).__enter__()
        except websockets.exceptions.InvalidStatus as e:
            status = e.response.status_code
            if status in (401, 403):
                raise PermissionError(f"the policy server at {self.url} refused the token (HTTP {status}; agent.token)") from None
            raise AgentUnavailable(f"the policy server at {self.url} answered HTTP {status} instead of a WebSocket") from None
        except (OSError, TimeoutError, websockets.exceptions.InvalidHandshake,
                websockets.exceptions.ConnectionClosed) as e:
            # ConnectionClosed: the server went away during the handshake (e.g. killed while restarting)
            raise AgentUnavailable(f"cannot reach the policy server at {self.url}: {type(e).__name__}: {e}") from None
        return self.greet()

    def greet(self) -> dict[str, Any]:
        raise NotImplementedError

    def start_episode(self, seed: int | None) -> None:
        """An episode starts (native and vla-eval's protocols tell the server; openpi's has no such message)."""

    def end_episode(self) -> None:
        """The episode is over."""

    def act(self, observation: dict[str, Any]) -> Any:
        raise NotImplementedError

    def close(self) -> None:
        if self.ws is not None:
            try:
                self.ws.close()
            except Exception:  # noqa: BLE001 - a broken connection may not close cleanly
                pass
            self.ws = None

    def _send(self, data: bytes) -> None:
        import websockets.exceptions

        if self.ws is None:
            raise AgentUnavailable(f"not connected to the policy server at {self.url}")
        try:
            self.ws.send(data)
        except (OSError, websockets.exceptions.ConnectionClosed) as e:
            self.close()
            raise AgentUnavailable(f"lost the policy server at {self.url}: {type(e).__name__}: {e}") from None

    def _recv(self) -> Any:
        import websockets.exceptions

        if self.ws is None:
            raise AgentUnavailable(f"not connected to the policy server at {self.url}")
        try:
            return self.ws.recv(timeout=self.timeout_s)
        except TimeoutError:
            self.close()
            raise TimeoutError(f"no reply from the policy server at {self.url} within {self.timeout_s:g} s "
                               "(agent.timeout_s)") from None
        except (OSError, websockets.exceptions.ConnectionClosed) as e:
            self.close()
            raise AgentUnavailable(f"lost the policy server at {self.url}: {type(e).__name__}: {e}") from None


class MessageChannel(Channel):
    """vla-eval's messages ({type, payload, seq, timestamp}); the native protocol uses them too."""

    protocol = "vla_eval"

    def greet(self) -> dict[str, Any]:
        self._send(pack_message("hello", {"harness_version": f"vla-harness {_version()}", "protocol_version": 1},
                                self._next_seq()))
        try:
            reply = self._reply(self.seq)
        except RuntimeError as e:  # an openpi server greets first, with its metadata
            raise RuntimeError(f"{e} (is it a {self.protocol} server? agent.protocol)") from None
        return reply.payload if reply.type == "hello" else {}  # a server from before HELLO answers with an error

    def start_episode(self, seed: int | None) -> None:
        self._start_seq = self._next_seq()  # not answered unless it fails: its error is then the reply awaited next
        self._send(pack_message("episode_start", self._episode_payload(seed), self._start_seq))

    def _episode_payload(self, seed: int | None) -> dict[str, Any]:
        return {}

    def end_episode(self) -> None:
        if self.ws is not None:
            self._send(pack_message("episode_end", {}, self._next_seq()))

    def act(self, observation: dict[str, Any]) -> Any:
        self._send(pack_message("observation", observation, self._next_seq()))
        reply = self._reply(self.seq)
        if reply.type == "error":
            raise RuntimeError(f"the policy server at {self.url} answered with an error: "
                               f"{reply.payload.get('error', reply.payload)}")
        if reply.type != "action":
            raise RuntimeError(f"the policy server at {self.url} answered an observation with {reply.type!r}")
        return reply.payload

    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def _reply(self, seq: int) -> Message:
        """The reply to message `seq`, or an error about a message the server could not read (seq 0) or about the
        episode's start (which failed, so nothing after it can be stepped); anything else (a late reply) is skipped."""
        while True:
            try:
                message = unpack_message(self._recv())
            except WireError as e:
                raise RuntimeError(f"unreadable reply from the policy server at {self.url}: {e}") from None
            if message.seq == seq or (message.type == "error" and message.seq in (0, self._start_seq)):
                return message


class NativeChannel(MessageChannel):
    """The project's own protocol: vla-eval's messages carrying the harness's observations and actions as
    they are (`{"obs", "instruction"}` -> `{"action"}`). A chain is one session on the server: its first
    episode carries the chain's seed (`new_chain`), the next ones none (the same session, `reset`)."""

    protocol = "native"

    def _episode_payload(self, seed: int | None) -> dict[str, Any]:
        return {"seed": seed}

    def end_episode(self) -> None:
        """Nothing to say: the next episode_start goes on in the session or replaces it."""


class OpenPIChannel(Channel):
    """openpi's: the server's metadata first, then observation dict -> reply dict; errors as text."""

    protocol = "openpi"

    def greet(self) -> dict[str, Any]:
        try:
            metadata = self._unpack(self._recv())
        except (TimeoutError, RuntimeError) as e:  # a vla-eval or native server waits for the client's hello
            raise type(e)(f"{e} (an openpi server sends its metadata first: is it one? agent.protocol)") from None
        return metadata if isinstance(metadata, dict) else {"metadata": metadata}

    def act(self, observation: dict[str, Any]) -> Any:
        self._send(pack_openpi(observation))
        return self._unpack(self._recv())

    def end_episode(self) -> None:
        """openpi's protocol has no episode messages: a server that keeps state (a history window, a chunk
        queue, as ours) keeps it per connection, so the next episode starts on a new one. A stateless server
        (openpi's own) only greets again."""
        self.close()

    def _unpack(self, data: Any) -> Any:
        if isinstance(data, str):
            raise RuntimeError(f"the policy server at {self.url} answered with an error: {data.strip()[-2000:]}")
        try:
            return unpack_openpi(data)
        except WireError as e:
            raise RuntimeError(f"unreadable reply from the policy server at {self.url}: {e}") from None


CHANNELS: dict[str, type[Channel]] = {"native": NativeChannel, "vla_eval": MessageChannel, "openpi": OpenPIChannel}


def open_channel(protocol: str, url: str, **kwargs: Any) -> Channel:
    if protocol not in CHANNELS:
        raise ValueError(f"agent.protocol must be one of {sorted(CHANNELS)}, got {protocol!r}")
    return CHANNELS[protocol](url, **kwargs)
