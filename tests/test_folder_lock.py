"""harness/folder_lock.py: one writer per folder, and `held`, which tells a follower (the learning curve) whether
a writer is still there."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness.folder_lock import LOCK_FILE, FolderBusy, FolderLock, held


def test_held_while_locked_and_not_for_a_stale_file_whatever_pid_it_names(tmp_path):
    assert not held(tmp_path)  # no file
    with FolderLock(tmp_path, "written by a test"):
        assert held(tmp_path)
        with pytest.raises(FolderBusy, match=f"is being written by another process \\(pid {os.getpid()} holds"):
            FolderLock(tmp_path).acquire()
    assert not held(tmp_path)
    # a holder killed outright leaves its file; its pid may since be another live process (here: this one)
    (tmp_path / LOCK_FILE).write_text(f"{os.getpid()}\n")
    assert not held(tmp_path)


def test_a_forked_child_does_not_keep_its_killed_parents_lock(tmp_path):
    """A training's DataLoader workers are forked and inherited the lock's file: after the trainer was SIGKILLed
    they kept the folder locked until they noticed, and the same command run at once was refused."""
    import signal
    import subprocess
    import sys
    import time

    script = (
        "import os, signal, sys, time\n"
        "from harness.folder_lock import FolderLock\n"
        "lock = FolderLock(sys.argv[1]).acquire()\n"
        "if os.fork() == 0:\n"  # a worker that outlives its parent; its fork handlers have run once it writes its pid
        "    open(sys.argv[2] + '.tmp', 'w').write(str(os.getpid()))\n"
        "    os.replace(sys.argv[2] + '.tmp', sys.argv[2])\n"
        "    time.sleep(60)\n"
        "    os._exit(0)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    child = tmp_path.parent / f"{tmp_path.name}.child"
    # no pipes: the child would hold them open, and the run would wait for it
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path), str(child)], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, timeout=60, cwd=str(Path(__file__).resolve().parents[1]))
    assert proc.returncode == -9
    deadline = time.monotonic() + 30
    while not child.is_file():
        assert time.monotonic() < deadline, "the forked child did not start within 30 s"
        time.sleep(0.05)
    try:
        assert not held(tmp_path)  # while the child lives
        FolderLock(tmp_path).acquire().release()  # the next writer gets it at once
    finally:
        os.kill(int(child.read_text()), signal.SIGKILL)


def test_the_next_writer_removes_what_killed_writers_left_and_nothing_else(tmp_path):
    """A write cut between its tmp file and its rename leaves `.NAME.tmp-PID`; the folder's next lock holder removes
    it, but not a running process's (a rank of the same run still writing), its subfolders' or any other file."""
    import subprocess
    import sys

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        killed = tmp_path / f".run.json.tmp-{gone.pid}"
        live = tmp_path / f".results.jsonl.tmp-{running.pid}"
        deeper = tmp_path / "checkpoints" / f".trainer_state.json.tmp-{gone.pid}"
        others = [tmp_path / "run.json", tmp_path / ".run.json.tmp-notapid.bak", tmp_path / "results.tmp-1"]
        deeper.parent.mkdir()
        for path in (killed, live, deeper, *others):
            path.write_text("{")
        with FolderLock(tmp_path):
            assert not killed.exists()
            assert live.exists() and deeper.exists() and all(p.exists() for p in others)
    finally:
        running.kill()
        running.wait()
