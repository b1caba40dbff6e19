"""The policy server: one `SessionPolicy` behind a WebSocket endpoint, with dynamic batching.

Each WebSocket connection is one client; each episode it starts is a session with its own agent state
(for a VLA: its window of frames, head state, chunk queue or ensemble). Messages of every client are read
as they come; observations go to the batcher (batching.py), everything else is answered at once.

Safety:
  * binds 127.0.0.1 unless `host` says otherwise; with `token` set, a client must present it
    (`Authorization: Api-Key TOKEN` or `Bearer TOKEN`, or `?token=TOKEN` in the URL, which is what
    vla-eval's client can send) or the handshake is refused with HTTP 401;
  * msgpack only; arrays of bool / int / uint / float only; a message over `max_message_mb` gets an error
    reply (one over twice that closes the connection with 1009, as reading it at all would hold it);
  * a message that cannot be read, or an observation the agent cannot take, gets an `error` reply; the
    connection and every other client go on. A client that goes away frees its session.

HTTP, on the same port: `GET /health` (no token) and `GET /stats` (the measured latencies and batch
sizes, `ServerStats.summary()`, as JSON).
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import json
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from http import HTTPStatus
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

from agents.base import SessionPolicy
from agents.remote.mapping import check_observation
from agents.remote.wire import WireError

from .batching import Batcher, ServerSession, ServerStats, check_batching
from .protocols import Codec, Event, make_codec

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)  # what stops a server run as a command (Ctrl-C, kill)


@dataclass(frozen=True)
class ServeSettings:
    host: str = "127.0.0.1"
    port: int = 8000  # 0: any free port (the server says which)
    protocol: str = "native"  # native | vla_eval | openpi
    token: str | None = None
    max_batch: int = 16
    max_wait_ms: float = 5.0
    max_message_mb: float = 16.0
    observation: dict[str, Any] | None = None  # vla_eval / openpi: the wire layout (ObservationMapping fields)

    def __post_init__(self) -> None:
        if not 0 <= int(self.port) <= 65535:
            raise ValueError(f"port must be 0..65535, got {self.port}")
        if not self.max_message_mb > 0:
            raise ValueError(f"max_message_mb must be > 0, got {self.max_message_mb}")
        if self.token is not None and not str(self.token):
            raise ValueError("token must be a non-empty string or null")
        check_batching(self.max_batch, self.max_wait_ms)
        make_codec(self.protocol, self.observation)  # a bad protocol or layout fails here

    @property
    def max_message_bytes(self) -> int:
        return int(self.max_message_mb * 2**20)


class PolicyServer:
    def __init__(self, policy: SessionPolicy, settings: ServeSettings, executor: ThreadPoolExecutor | None = None) -> None:
        """`executor`: the compute thread the policy was built in (`build_in_compute_thread`), else a new one."""
        self.policy, self.settings = policy, settings
        self.stats = ServerStats()
        self.sessions: set[ServerSession] = set()
        self._ids = itertools.count(1)
        self.batcher = Batcher(policy, settings.max_batch, settings.max_wait_ms, self.stats, lambda: len(self.sessions),
                               executor)

    def info(self) -> dict[str, Any]:
        """What the server tells a client about itself (hello / openpi metadata)."""
        spec = json.loads(json.dumps(asdict(self.policy.spec), default=str))  # plain values, whatever `extra` holds
        return {"server": "vla-harness", "protocol": self.settings.protocol, "agent": spec,
                "max_batch": self.settings.max_batch, "max_wait_ms": self.settings.max_wait_ms}

    # ---------------------------------------------------------------- sessions
    async def _open(self, seed: int | None = None) -> ServerSession:
        state = await self.batcher.call(self.policy.new_session)
        session = ServerSession(next(self._ids), state)
        try:
            if seed is not None and hasattr(self.policy, "new_chain"):
                await self.batcher.call(self.policy.new_chain, state, seed)
            await self.batcher.call(self.policy.reset, state)
        except BaseException:  # the state goes back to the policy: no session holds it
            await self.batcher.call(self.policy.close_session, state)
            raise
        self.sessions.add(session)
        self.stats.sessions_total += 1
        self.stats.sessions_open = len(self.sessions)
        return session

    async def _close(self, session: ServerSession | None) -> None:
        if session is None or session.closed:
            return
        session.closed = True
        self.sessions.discard(session)
        self.stats.sessions_open = len(self.sessions)
        await self.batcher.call(self.policy.close_session, session.state)

    # ---------------------------------------------------------------- connections
    async def handle(self, ws: Any) -> None:
        codec = make_codec(self.settings.protocol, self.settings.observation)
        self.stats.connections += 1
        session: ServerSession | None = None
        try:
            greeting = codec.greeting(self.info())
            if greeting is not None:
                await ws.send(greeting)
            if codec.session_per_connection:
                try:
                    session = await self._open()
                except Exception as e:  # told to the client, whose first request would otherwise meet a bare close
                    await ws.send(codec.error(None, f"the server could not open a session: {type(e).__name__}: {e}"))
                    raise
            async for data in ws:
                session = await self._message(ws, codec, session, data)
        except Exception as e:  # noqa: BLE001 - one connection's trouble is not the server's
            if not _closed_error(e):
                print(f"[serve] connection error: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        finally:
            await self._close(session)

    async def _message(self, ws: Any, codec: Codec, session: ServerSession | None, data: Any) -> ServerSession | None:
        """Answer one message; returns the connection's session afterwards."""
        event: Event | None = None
        try:
            if len(data) > self.settings.max_message_bytes:
                raise WireError(f"a message of {len(data)} bytes is over the server's limit of "
                                f"{self.settings.max_message_bytes} (max_message_mb={self.settings.max_message_mb:g})")
            event = codec.read(data)
            if event.kind == "hello":
                await ws.send(codec.hello(event, self.info()))
            elif event.kind == "start" and event.continues and session is not None:
                await self.batcher.call(self.policy.reset, session.state)  # the chain's next subtask
            elif event.kind == "start":
                await self._close(session)
                session = None  # until the new one opens: a failed start leaves the connection without one
                session = await self._open(event.seed)
            elif event.kind == "end":
                await self._close(session)
                session = None
            elif event.kind == "observe":
                if session is None:
                    raise WireError("an observation before episode_start: start an episode first")
                if event.restart:
                    await self.batcher.call(self.policy.reset, session.state)
                check_observation(event.obs, self.policy.spec.cameras, codec.wire_names())
                action = await self.batcher.step(session, event.obs, event.instruction)
                await ws.send(codec.action(event, action))
        except Exception as e:  # noqa: BLE001 - whatever the message or the agent did, the client is told
            if _closed_error(e):
                raise
            self.stats.errors += 1
            await ws.send(codec.error(event, f"{type(e).__name__}: {e}" if not isinstance(e, WireError) else str(e)))
        return session

    # ---------------------------------------------------------------- HTTP and serving
    def _authorized(self, request: Any) -> bool:
        token = self.settings.token
        if token is None:
            return True
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() not in ("api-key", "bearer"):
            given = (parse_qs(urlsplit(request.path).query).get("token") or [""])[0]
        return hmac.compare_digest(given.strip().encode(), str(token).encode())

    def _process_request(self, connection: Any, request: Any) -> Any:
        path = urlsplit(request.path).path
        if path == "/health":
            return connection.respond(HTTPStatus.OK, "ok\n")
        if not self._authorized(request):
            return connection.respond(HTTPStatus.UNAUTHORIZED, "token rejected\n")
        if path == "/stats":
            response = connection.respond(HTTPStatus.OK, json.dumps(self.stats.summary()) + "\n")
            del response.headers["Content-Type"]  # respond() set text/plain; a second header would sit beside it
            response.headers["Content-Type"] = "application/json"
            return response
        return None  # on to the WebSocket handshake

    async def serve(self, on_ready: Callable[[int], None] | None = None, stop: asyncio.Event | None = None,
                    stop_signals: tuple[int, ...] = STOP_SIGNALS) -> None:
        """Serve until `stop` is set or one of `stop_signals` comes; `on_ready(port)` once listening."""
        from websockets.asyncio.server import serve

        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in stop_signals:
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):  # not in the main thread, or not on this platform
                pass
        batching = asyncio.create_task(self.batcher.run())
        try:
            async with serve(self.handle, self.settings.host, self.settings.port, process_request=self._process_request,
                             max_size=2 * self.settings.max_message_bytes, compression=None) as server:
                port = next(iter(server.sockets)).getsockname()[1]
                if on_ready is not None:
                    on_ready(port)
                await stop.wait()
        finally:
            batching.cancel()
            self.batcher.close()


def _closed_error(error: BaseException) -> bool:
    import websockets.exceptions

    return isinstance(error, (websockets.exceptions.ConnectionClosed, ConnectionError))


def run_server(policy: SessionPolicy, settings: ServeSettings, on_ready: Callable[[int], None] | None = None,
               executor: ThreadPoolExecutor | None = None, stop_signals: tuple[int, ...] = STOP_SIGNALS) -> dict[str, Any]:
    """Serve in this thread until one of `stop_signals` (SIGTERM, SIGINT); returns the server's stats."""
    server = PolicyServer(policy, settings, executor)
    asyncio.run(server.serve(on_ready, stop_signals=stop_signals))
    return server.stats.summary()
