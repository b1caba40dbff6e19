"""`python -m harness.serve`: serves until SIGTERM and prints its statistics; an invalid configuration is
one line (exit status 2) before anything is loaded or bound."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from agents import make_agent
from tests.serve_helpers import ROOT, wait_for


def test_the_command_serves_until_terminated():
    proc = subprocess.Popen([sys.executable, "-m", "harness.serve", "agent=random", "port=0", "token=abc", "max_batch=4"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        match = re.match(r"serving random on (ws://127\.0\.0\.1:\d+) \(protocol native, max_batch 4, max_wait_ms 5, "
                         r"token required\)", line)
        assert match, line + proc.stderr.read()
        agent, reference = make_agent("remote", url=match.group(1), token="abc"), make_agent("random")

        def chain(a, seed: int) -> list[np.ndarray]:  # two subtasks: the generator runs on, as in-process
            a.new_chain(seed)
            actions = []
            for instruction in ("open the drawer", "turn on the led light"):
                a.reset()
                actions += [a.step({"robot_obs": np.zeros(15)}, instruction) for _ in range(3)]
            return actions

        for seed in (0, 5):
            np.testing.assert_array_equal(chain(agent, seed), chain(reference, seed))
        agent.close()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    stats = json.loads(out)
    assert stats["requests"] == 12 and stats["sessions_total"] == 2 and stats["errors"] == 0  # a session per chain


@pytest.mark.parametrize("overrides,message", [
    ("agent=random protocol=pigeon", "protocol must be one of ['native', 'openpi', 'vla_eval'], got 'pigeon'"),
    ("agent=random port=70000", "port must be 0..65535"),
    ("agent=random max_batch=0", "max_batch must be >= 1 and max_wait_ms >= 0, got 0, 5"),
    ("agent=random protocol=vla_eval observation.cameras={top:x}", "observation.cameras maps env cameras"),
    ("agent=random protocol=native observation.state_key=x", "observation is for vla_eval and openpi"),
    ("agent=random protocol=openpi +observation.states=[0,1]", "observation.states: what a client sends"),
    ("agent=vla", "agent.checkpoint: Missing mandatory value"),
    ("agent=vla agent.checkpoint=/nowhere", "checkpoint /nowhere: is not a folder"),
])
def test_invalid_configurations_are_one_line(overrides, message):
    proc = subprocess.run([sys.executable, "-m", "harness.serve", "port=0", *overrides.split()], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    lines = [line for line in proc.stderr.splitlines() if line.strip() and "pybullet build time" not in line]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("harness.serve: invalid configuration: ") and message in lines[0], lines[0]


PARENT = """
import sys, time
sys.path.insert(0, sys.argv[1])
from harness.serve.process import ServerProcess
from harness.serve.server import ServeSettings
server = ServerProcess({"name": "random"}, ServeSettings(port=0)).start()
print(server.process.pid, server.url, flush=True)
time.sleep(600)
"""


def test_a_server_whose_parent_is_killed_exits():
    """An evaluation killed outright (SIGKILL, an OOM kill) must not leave its server holding the model."""
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(ROOT)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        pid, url = parent.stdout.readline().split()
        assert make_agent("remote", url=url).spec.name == "random"
        parent.kill()
        parent.wait()
        wait_for(lambda: _gone(int(pid)), 30, f"the orphaned server {pid} exiting")
    finally:
        parent.kill()


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")  # exited, unreaped
    except (FileNotFoundError, ProcessLookupError):
        return True
