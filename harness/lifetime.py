"""How the harness's processes end: with the process that started them, and through their cleanup on SIGTERM.

A process killed outright (SIGKILL, an OOM kill) runs no cleanup, so the processes it spawned (evaluation
workers, the render process, a policy server) would go on working, and holding the model's memory, for no
one; `end_with_parent` makes each of them stop within a second of its parent. Python's default SIGTERM
ends a process without running its `finally` blocks, so an evaluation stopped by `kill` (or by torchrun, or a
job scheduler) would leave its workers running; `sigterm_exits` turns SIGTERM into SystemExit, which stops the
workers and releases the output folder's lock as Ctrl-C does.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time

SIGTERM_EXIT_STATUS = 128 + signal.SIGTERM


def end_with_parent(poll_s: float = 1.0) -> None:
    """Send this process SIGTERM once the process that started it is gone (a daemon thread watches). The parent is
    the one multiprocessing names (its pid from before this process ran any code): one killed while this process
    was still starting up is gone already, where os.getppid() would name the process that adopted it."""
    started_by = multiprocessing.parent_process()
    parent = started_by.pid if started_by is not None else os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def sigterm_exits() -> None:
    """SIGTERM raises SystemExit(143) in the main thread, so `with` and `finally` blocks run."""

    def exit_now(signum: int, frame: object) -> None:
        sys.exit(SIGTERM_EXIT_STATUS)

    signal.signal(signal.SIGTERM, exit_now)


def exit_without_teardown(status: int = 0) -> None:
    """End a torchrun rank that has finished its work and shut its process group down, skipping the
    interpreter's and C++ libraries' teardown.

    A gloo rank whose run had completed (its checkpoint and summary written, the process group destroyed)
    sometimes aborted during interpreter finalization ("terminate called without an active exception",
    SIGABRT, no Python frame left: a thread inside torch's C++ runtime destroyed while still joinable), so
    torchrun reported a finished run as failed. Nothing of ours is left to clean up at that point; stdout,
    stderr and logging are flushed here, then the process ends at once."""
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or broken
            pass
    os._exit(status)
