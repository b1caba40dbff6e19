"""A server builds its policy in the thread that steps it, with the torch threads it was given.

torch's OpenMP keeps a team of worker threads for every thread that runs a parallel operation: a model
loaded in the main thread and stepped in the compute thread left two teams contending for the cores, and
with 2 torch threads on 2 cores the server's batches ran at half the speed of the same call in one thread
(docs/SERVING.md). The probe policy's actions say which thread built and which stepped it."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading

import pytest

from agents import make_agent
from harness.serve.batching import build_in_compute_thread
from tests.serve_helpers import ROOT, observations, served

PROBE = "tests.serve_helpers:ThreadProbePolicy"
SAME_THREAD_NOT_MAIN_ONE_TORCH_THREAD = [1.0, 1.0, 1.0]


def probe_flags(url: str) -> list[float]:
    agent = make_agent("remote", url=url)
    try:
        agent.reset()
        return list(agent.step(observations(1)[0], "open the drawer")[:3])
    finally:
        agent.close()


def test_a_server_process_steps_its_policy_in_the_thread_that_built_it():
    with served({"name": "custom", "factory": PROBE}, threads=1) as server:
        assert probe_flags(server.url) == SAME_THREAD_NOT_MAIN_ONE_TORCH_THREAD


def test_the_serve_command_steps_its_policy_in_the_thread_that_built_it():
    proc = subprocess.Popen([sys.executable, "-m", "harness.serve", "agent=custom", f"agent.factory={PROBE}", "port=0",
                             "threads=1"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        match = re.match(r"serving thread_probe on (ws://127\.0\.0\.1:\d+)", line)
        assert match, line + proc.stderr.read()
        assert probe_flags(match.group(1)) == SAME_THREAD_NOT_MAIN_ONE_TORCH_THREAD
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0


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
