"""A server builds its policy in the thread that steps it, with the torch threads it was given.

torch's OpenMP runtime keeps a pool of worker threads for every thread that runs a parallel operation: a
model loaded in the main thread and stepped in the compute thread ran the server's batches at half the speed
of the same call in one thread (2 torch threads on 2 cores, docs/SERVING.md). The probe policy's actions say
which thread built and which stepped it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from agents import make_agent
from harness.serve.batching import build_in_compute_thread
from tests.serve_helpers import ROOT, observations, served, wait_for

PROBE = "tests.serve_helpers:ThreadProbePolicy"
# two torch threads: the tests' processes have OMP_NUM_THREADS=1 (tests/conftest.py), so one thread would be what
# the server has without setting any
SAME_THREAD_NOT_MAIN_TWO_TORCH_THREADS = [1.0, 1.0, 0.5]


def probe_flags(url: str) -> list[float]:
    agent = make_agent("remote", url=url)
    try:
        agent.reset()
        return list(agent.step(observations(1)[0], "open the drawer")[:3])
    finally:
        agent.close()


def serve_command(*overrides: str) -> subprocess.Popen:
    """The command, with Ctrl-C's default action (the commands of a background job started without job control
    inherit SIGINT ignored, and Python then never raises KeyboardInterrupt)."""
    return subprocess.Popen([sys.executable, "-m", "harness.serve", "port=0", *overrides], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def test_a_server_process_steps_its_policy_in_the_thread_that_built_it():
    with served({"name": "custom", "factory": PROBE}, threads=2) as server:
        assert probe_flags(server.url) == SAME_THREAD_NOT_MAIN_TWO_TORCH_THREADS


@pytest.mark.timeout(300)
def test_the_serve_command_steps_its_policy_in_the_thread_that_built_it():
    proc = serve_command("agent=custom", f"agent.factory={PROBE}", "threads=2")
    try:
        line = proc.stdout.readline()
        match = re.match(r"serving thread_probe on (ws://127\.0\.0\.1:\d+)", line)
        assert match, line
        assert probe_flags(match.group(1)) == SAME_THREAD_NOT_MAIN_TWO_TORCH_THREADS
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    finally:
        proc.kill()
        proc.communicate(timeout=30)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("to_the_loading_thread", [False, True])
def test_ctrl_c_while_the_agent_loads_ends_the_command_at_once(tmp_path: Path, to_the_loading_thread: bool):
    """The kernel hands a process's SIGINT to any of its threads: to the main one, or (sent by the load
    itself here, to make it certain) to the compute thread that loads."""
    started = tmp_path / "started"
    proc = serve_command("agent=custom", "agent.factory=tests.serve_helpers:SlowLoadingPolicy",
                         f"+agent.started={started}", "+agent.seconds=120",
                         f"+agent.interrupt_own_thread={to_the_loading_thread}")
    try:
        wait_for(started.exists, timeout_s=120, what="the agent's load to begin")
        interrupted = time.monotonic()
        if not to_the_loading_thread:
            proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)  # not the load's 120 s
        assert time.monotonic() - interrupted < 60
        assert proc.returncode == 130 and "interrupted while loading the agent" in err, err
    finally:
        proc.kill()
        proc.communicate(timeout=30)


def test_building_in_the_compute_thread_returns_that_thread_and_raises_what_the_build_raised():
    policy, executor = build_in_compute_thread(lambda: threading.get_ident())
    try:
        assert executor.submit(threading.get_ident).result() == policy != threading.get_ident()
    finally:
        executor.shutdown()

    def broken() -> None:
        raise FileNotFoundError("checkpoint /nowhere: is not a folder")

    with pytest.raises(FileNotFoundError, match="/nowhere"):
        build_in_compute_thread(broken)


def test_a_server_process_leaves_ctrl_c_to_its_parent():
    """Ctrl-C reaches the whole foreground process group: the server its parent started (an evaluation's
    server=on) must not stop on it, or the parent's watcher would start it again while the parent itself stops."""
    with served({"name": "random"}) as server:
        os.kill(server.process.pid, signal.SIGINT)
        time.sleep(2.0)  # the watcher polls every 0.5 s
        assert server.process.is_alive() and server.restarts == 0
        agent = make_agent("remote", url=server.url)
        try:
            agent.reset()
            assert agent.step({"robot_obs": np.zeros(15)}, "open the drawer").shape == (7,)
        finally:
            agent.close()
    assert not server.process.is_alive()  # closed by its parent
