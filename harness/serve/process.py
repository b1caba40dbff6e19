"""A policy server in a process of its own, started, watched and stopped from Python (the evaluation's
`server=auto`, the benchmark, tests).

    with ServerProcess({"name": "vla", "checkpoint": DIR}, ServeSettings(port=0, token="...")) as server:
        url = server.url              # ws://127.0.0.1:PORT, once the model is loaded and the port bound
        ...
        stats = server.stats()        # GET /stats

A server that dies (a crash, an OOM kill) is started again on the same port (`restart=True`), so that
its clients can reconnect.
"""

from __future__ import annotations

import http.client
import json
import multiprocessing as mp
import signal
import sys
import threading
import time
import traceback
import urllib.request
from dataclasses import replace
from multiprocessing.connection import Connection
from typing import Any

from harness.lifetime import end_with_parent

from .batching import build_in_compute_thread
from .server import ServeSettings, run_server


def _serve_main(conn: Connection, agent: dict[str, Any], settings: ServeSettings, threads: int) -> None:
    end_with_parent()  # a parent killed outright would leave the server holding the model for no one
    # Ctrl-C reaches the whole foreground process group: the server would stop cleanly and the watcher, seeing it
    # gone before the parent's own KeyboardInterrupt closed it, would start it again. The parent stops it (SIGTERM)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        from agents import make_policy

        policy, executor = build_in_compute_thread(lambda: make_policy(**agent), threads)
        run_server(policy, settings, on_ready=lambda port: conn.send(("ready", port)), executor=executor,
                   stop_signals=(signal.SIGTERM,))
    except BaseException:  # noqa: BLE001 - reported to the parent
        try:
            conn.send(("fatal", traceback.format_exc()))
        except (OSError, BrokenPipeError):
            pass


class ServerError(RuntimeError):
    """The server process could not start (a bad checkpoint, a port in use, ...)."""


class ServerProcess:
    def __init__(self, agent: dict[str, Any], settings: ServeSettings, threads: int = 0,
                 start_timeout_s: float = 600.0, restart: bool = True) -> None:
        if "name" not in agent:
            raise ValueError(f"the served agent needs a name (and its options), got {agent}")
        self.agent, self.settings, self.threads = dict(agent), settings, threads
        self.start_timeout_s, self.restart = start_timeout_s, restart
        self.ctx = mp.get_context("spawn")  # no fork: CUDA and threads do not survive one
        self.process: Any = None
        self.restarts = 0
        self._closing = threading.Event()
        self._watcher: threading.Thread | None = None

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> "ServerProcess":
        self._launch()
        if self.restart:
            self._watcher = threading.Thread(target=self._watch, name="policy-server-watch", daemon=True)
            self._watcher.start()
        return self

    def _launch(self) -> None:
        parent, child = self.ctx.Pipe()
        self.process = self.ctx.Process(target=_serve_main, args=(child, self.agent, self.settings, self.threads),
                                        daemon=True)
        self.process.start()
        child.close()
        try:
            if not parent.poll(self.start_timeout_s):
                self.process.kill()
                raise ServerError(f"the policy server did not start within {self.start_timeout_s:g} s")
            kind, value = parent.recv()
        except EOFError:
            raise ServerError(f"the policy server process died while starting (exit code {self.process.exitcode})") from None
        finally:
            parent.close()
        if kind != "ready":
            raise ServerError(f"the policy server could not start:\n{value}")
        self.settings = replace(self.settings, port=int(value))  # a restart binds the same port

    def _watch(self) -> None:
        """Start the server again whenever it dies, until closed."""
        while not self._closing.is_set():
            self.process.join(timeout=0.5)
            if self.process.is_alive() or self._closing.is_set():
                continue
            print(f"[serve] the policy server died (exit code {self.process.exitcode}); starting it again on "
                  f"port {self.port}", file=sys.stderr, flush=True)
            for _ in range(120):  # the port can stay busy for a moment after a kill
                try:
                    self._launch()
                    self.restarts += 1
                    break
                except ServerError as e:
                    if self._closing.is_set():
                        return
                    print(f"[serve] restart failed, retrying: {str(e).splitlines()[-1]}", file=sys.stderr, flush=True)
                    time.sleep(1.0)
            else:
                return

    def kill(self) -> None:
        """Kill the server process (what a crash does); with restart, it comes back."""
        self.process.kill()

    def close(self) -> dict[str, Any] | None:
        """Stop the server (SIGTERM, then SIGKILL); returns its last stats when it still answered."""
        self._closing.set()
        if self._watcher is not None:
            self._watcher.join(timeout=30)
        stats = self.stats() if self.process is not None and self.process.is_alive() else None
        if self.process is not None:
            self.process.terminate()
            self.process.join(timeout=10)
            if self.process.is_alive():
                self.process.kill()
                self.process.join(timeout=5)
        return stats

    def __enter__(self) -> "ServerProcess":
        return self.start() if self.process is None else self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---------------------------------------------------------------- where and how it is doing
    @property
    def port(self) -> int:
        return self.settings.port

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.settings.host in ("0.0.0.0", "") else self.settings.host
        return f"ws://{host}:{self.port}"

    def stats(self, timeout_s: float = 10.0) -> dict[str, Any] | None:
        """GET /stats: the server's measured latencies, batch sizes, sessions; None when it does not answer."""
        request = urllib.request.Request(self.url.replace("ws://", "http://", 1) + "/stats")
        if self.settings.token:
            request.add_header("Authorization", f"Api-Key {self.settings.token}")
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                return json.loads(response.read())
        except (OSError, http.client.HTTPException, ValueError):  # gone, cut off mid-answer, or not JSON
            return None
