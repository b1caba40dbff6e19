"""Dynamic batching: observations of different sessions that arrive close together are stepped together.

A batch is collected while the compute thread is free: it goes as soon as it holds `max_batch` requests,
or a request of every open session (no one else can send before it is answered), or `max_wait_ms` after
collecting began (when its first request arrived, or when the batch before it was done, whichever is
later: requests that queued up during a batch wait a moment for the sessions that batch just answered,
so that a server under load does not settle into alternating half batches).
The policy steps the batch in one call (`SessionPolicy.step_batch`: for a VLA, one backbone run over the
new frames of all sessions and one head call), in the server's one compute thread, while the event loop
goes on receiving. The policy is best built in that thread too (`build_in_compute_thread`): torch's
OpenMP runtime keeps a pool of worker threads for every thread that runs a parallel operation, and a model
loaded in the main thread and stepped in the compute thread ran its batches at half the speed of the same
call in one thread (2 threads on 2 cores; docs/SERVING.md). A batch that fails is stepped again request
by request, so that one client's bad observation fails only its own request (`SessionPolicy.step_batch`:
a policy that raises has stepped no session). A call that returns another number of actions than it was
given observations has stepped its sessions: every request of that batch fails, none is stepped again.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from agents.base import SessionPolicy

LATENCY_WINDOW = 200_000  # the most recent request latencies kept for the percentiles


@dataclass(eq=False)
class ServerSession:
    """One episode of one client: the policy's session and whether it is still open."""

    id: int
    state: Any
    closed: bool = False


@dataclass
class Request:
    session: ServerSession
    obs: dict[str, Any]
    instruction: str
    received: float  # time.perf_counter() when the message was read
    future: asyncio.Future


@dataclass
class ServerStats:
    """What the server measured: request latency (message read -> action ready), batch sizes, compute."""

    latencies: deque = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    batch_sizes: Counter = field(default_factory=Counter)
    compute_s: float = 0.0
    requests: int = 0
    errors: int = 0  # error replies (unreadable messages, failed steps)
    connections: int = 0
    sessions_open: int = 0
    sessions_total: int = 0
    started: float = field(default_factory=time.time)

    def summary(self) -> dict[str, Any]:
        lat = np.asarray(self.latencies, dtype=np.float64) * 1e3
        batches = sum(self.batch_sizes.values())
        stepped = sum(size * n for size, n in self.batch_sizes.items())
        return {
            "requests": self.requests,
            "errors": self.errors,
            "batches": batches,
            "mean_batch": round(stepped / batches, 3) if batches else None,
            "max_batch_reached": max(self.batch_sizes) if self.batch_sizes else 0,
            "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())},
            "latency_ms": {f"p{q}": round(float(np.percentile(lat, q)), 2) for q in (50, 95, 99)} if lat.size else None,
            "compute_s": round(self.compute_s, 3),
            "connections": self.connections,
            "sessions_open": self.sessions_open,
            "sessions_total": self.sessions_total,
            "uptime_s": round(time.time() - self.started, 1),
            "peak_rss_mb": _peak_rss_mb(),
        }


def _peak_rss_mb() -> float | None:
    try:
        import resource
    except ImportError:  # not on this platform
        return None
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux reports KiB


def check_batching(max_batch: int, max_wait_ms: float) -> None:
    if max_batch < 1 or max_wait_ms < 0:
        raise ValueError(f"max_batch must be >= 1 and max_wait_ms >= 0, got {max_batch}, {max_wait_ms}")


def compute_thread() -> ThreadPoolExecutor:
    """The one thread a server calls its policy from."""
    return ThreadPoolExecutor(1, thread_name_prefix="policy")


def build_in_compute_thread(build: Callable[[], SessionPolicy], threads: int = 0) -> tuple[SessionPolicy, ThreadPoolExecutor]:
    """The policy built in a new compute thread (with torch's intra-op `threads` there, when > 0), and that
    thread, for the server to step it in (`PolicyServer(..., executor=)`); raises what building raised."""
    def built() -> SessionPolicy:
        if threads > 0:  # before the build: a model's load runs in them too
            import torch

            torch.set_num_threads(threads)
        return build()

    executor = compute_thread()
    try:
        future = executor.submit(built)
        # short waits: Ctrl-C may be delivered to the compute thread, and the main thread handles it (raises
        # KeyboardInterrupt) only when it wakes, which an untimed wait would not do before the load ends
        while not wait([future], timeout=0.2).done:
            pass
        return future.result(), executor
    except BaseException:
        executor.shutdown(wait=False)
        raise


class Batcher:
    def __init__(self, policy: SessionPolicy, max_batch: int, max_wait_ms: float, stats: ServerStats,
                 open_sessions: Callable[[], int], executor: ThreadPoolExecutor | None = None) -> None:
        check_batching(max_batch, max_wait_ms)
        self.policy, self.max_batch, self.max_wait_s = policy, int(max_batch), max_wait_ms / 1e3
        self.stats, self.open_sessions = stats, open_sessions
        self.queue: asyncio.Queue[Request] = asyncio.Queue()
        self.executor = executor or compute_thread()  # the policy is called from one thread

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a policy call (reset, new session, ...) in the compute thread, after the batches before it."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def step(self, session: ServerSession, obs: dict[str, Any], instruction: str) -> Any:
        """The session's action for this observation, stepped in a batch; raises what stepping raised."""
        request = Request(session, obs, instruction, time.perf_counter(), asyncio.get_running_loop().create_future())
        await self.queue.put(request)
        try:
            return await request.future
        finally:
            self.stats.latencies.append(time.perf_counter() - request.received)
            self.stats.requests += 1

    async def run(self) -> None:
        """Form batches and step them, forever (cancelled when the server stops)."""
        while True:
            batch = [r for r in await self._collect() if not r.future.done()]
            for r in batch:
                if r.session.closed:  # its episode ended (or was replaced) while it waited: told, never left waiting
                    r.future.set_exception(RuntimeError("the episode was closed before this observation was stepped"))
            batch = [r for r in batch if not r.session.closed]
            if not batch:
                continue
            started = time.perf_counter()
            try:
                results = await self.call(self._step, batch)
            except Exception as e:  # noqa: BLE001 - the compute thread itself failed: told to this batch's clients,
                results = [(False, e)] * len(batch)  # and the server goes on with the next batch
            self.stats.compute_s += time.perf_counter() - started
            self.stats.batch_sizes[len(batch)] += 1
            for request, (ok, value) in zip(batch, results):
                if not request.future.done():
                    request.future.set_result(value) if ok else request.future.set_exception(value)

    async def _collect(self) -> list[Request]:
        began = time.perf_counter()
        batch = [await self.queue.get()]
        deadline = max(began, batch[0].received) + self.max_wait_s
        while len(batch) < self.max_batch:
            if not self.queue.empty():
                batch.append(self.queue.get_nowait())
                continue
            left = deadline - time.perf_counter()
            if left <= 0 or len(batch) >= self.open_sessions():  # every open session is waiting in this batch
                break
            try:
                batch.append(await asyncio.wait_for(self.queue.get(), left))
            except asyncio.TimeoutError:
                break
        return batch

    def _step(self, batch: list[Request]) -> list[tuple[bool, Any]]:
        """(ok, action or exception) per request: the batch in one call, or one by one when it fails
        (a policy that raises has stepped no session; one that returns an exception for a session has
        stepped the others)."""
        try:
            actions = list(self.policy.step_batch([r.session.state for r in batch], [r.obs for r in batch],
                                                  [r.instruction for r in batch]))
        except Exception as e:  # noqa: BLE001 - told to the clients; the server goes on
            if len(batch) == 1:
                return [(False, e)]
            return [self._step([r])[0] for r in batch]
        if len(actions) != len(batch):  # a policy bug: it has stepped the sessions, so none is stepped again
            error = RuntimeError(f"the policy's step_batch returned {len(actions)} action(s) for {len(batch)} "
                                 "observation(s)")
            return [(False, error)] * len(batch)
        return [(not isinstance(a, BaseException), a) for a in actions]

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
