"""harness/durable_files.py: a file a rerun reads back is whole or untouched, whatever stops its writer."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.durable_files import atomic_write, atomic_write_text

ROOT = Path(__file__).resolve().parents[1]


def test_a_write_that_fails_half_way_leaves_the_old_content_and_no_temporary_file(tmp_path):
    path = tmp_path / "run.json"
    atomic_write_text(path, '{"old": 1}\n')

    def half_then_interrupted(f):
        f.write(b'{"new": ')
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, half_then_interrupted)
    assert json.loads(path.read_text()) == {"old": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]


def test_the_new_content_replaces_the_old_and_is_read_back_as_written(tmp_path):
    path = tmp_path / "summary.json"
    atomic_write_text(path, "first\n")
    atomic_write_text(path, "second, é\n")
    assert path.read_text(encoding="utf-8") == "second, é\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


# the JSON streamed in small pieces (json.JSONEncoder.iterencode), as a slow writer would, so that a kill lands mid-write
WRITER = """
import json, sys
from pathlib import Path
from harness.durable_files import atomic_write
path = Path(sys.argv[1])
i = 0
while True:
    i += 1
    pieces = json.JSONEncoder().iterencode({"round": i, "rows": [[i] * 64] * 4000})
    atomic_write(path, lambda f: [f.write(piece.encode()) for piece in pieces])
    if i == 1:
        print("written", flush=True)
"""


def test_a_writer_killed_at_any_moment_leaves_a_file_that_parses(tmp_path):
    """SIGKILL (no cleanup runs) while a ~1 MB JSON file is rewritten over and over: the file is always the old or
    the new one. Written in place (open(path, "wb") instead of atomic_write), these kills leave half a file."""
    path = tmp_path / "results.json"
    for delay in (0.05, 0.13, 0.21, 0.34):
        child = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], cwd=ROOT, stdout=subprocess.PIPE,
                                 env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert child.stdout.readline().strip() == b"written"  # the kills land in later rounds, whatever the load
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        child.wait()
        assert json.loads(path.read_text())["round"] >= 1  # json.loads: a torn file raises


def test_the_folder_is_synced_after_the_rename(tmp_path, monkeypatch):
    """The new name on disk before the caller goes on (the evaluation's store removes the rank logs it merged)."""
    from harness import durable_files

    synced = []
    monkeypatch.setattr(durable_files, "fsync_dir",
                        lambda folder: synced.append((folder, (tmp_path / "a.json").read_text())))
    atomic_write_text(tmp_path / "a.json", "{}")
    assert synced == [(tmp_path, "{}")]  # the folder, once the file had its name
