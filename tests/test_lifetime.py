"""A spawned process ends with the process that started it, also when that one was killed while it started up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PARENT = """
import multiprocessing as mp, os, sys, time


def child(path):
    time.sleep(2)  # still starting up (imports, a model load) when its parent is killed
    from harness.lifetime import end_with_parent

    end_with_parent(poll_s=0.1)
    with open(path, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(120)


if __name__ == "__main__":
    proc = mp.get_context("spawn").Process(target=child, args=(sys.argv[1],))
    proc.start()
    print(proc.pid, flush=True)
    time.sleep(120)
"""


def alive(pid: int) -> bool:
    """Running (an exited process that nobody has reaped yet, a zombie, is not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_a_child_whose_parent_was_killed_while_it_started_ends(tmp_path):
    script, marker = tmp_path / "parent.py", tmp_path / "child.pid"
    script.write_text(PARENT)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    parent = subprocess.Popen([sys.executable, str(script), str(marker)], stdout=subprocess.PIPE, text=True, env=env)
    child = int(parent.stdout.readline())
    try:
        parent.send_signal(signal.SIGKILL)  # before the child's end_with_parent
        parent.wait()
        deadline = time.monotonic() + 60
        while not marker.exists() and alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        deadline = time.monotonic() + 10
        while alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(child), "the child outlived its killed parent"
    finally:
        if alive(child):
            os.kill(child, signal.SIGKILL)
