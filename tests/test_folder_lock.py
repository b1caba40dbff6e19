"""harness/folder_lock.py: one writer per folder, and `held`, which tells a follower (the learning curve) whether
a writer is still there."""

from __future__ import annotations

import os

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
