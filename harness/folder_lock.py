"""One writer per folder: an exclusive, non-blocking `flock` on `<folder>/.writer.lock`.

The dataset writer (a split folder) and the evaluation (its output folder) hold it for as long as they
write. The lock file holds the owner's pid, so a second writer is refused at once with the process to
wait for. The kernel drops the lock when its owner dies (even by SIGKILL), so a killed run never leaves
a folder locked; the file it leaves behind is harmless. The next holder removes what killed writers left beside
the folder's files (`harness.durable_files.TMP_GLOB`: a write cut between its tmp file and its rename).
"""

from __future__ import annotations

import fcntl
import os
import time
import weakref
from pathlib import Path
from typing import IO, Any

from harness.durable_files import TMP_GLOB

LOCK_FILE = ".writer.lock"


class FolderBusy(RuntimeError):
    """Another process holds the folder's lock."""


class FolderLock:
    """`with FolderLock(folder, "written by another evaluation"):` ... (the folder must exist)."""

    def __init__(self, folder: str | Path, busy: str = "written by another process"):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.busy = busy  # what the refusal says the folder is being
        self._file: IO[str] | None = None

    def acquire(self) -> "FolderLock":
        while True:
            f = open(self.path, "a+")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(f)
                f.close()
                raise FolderBusy(f"{self.folder} is being {self.busy} (pid {holder} holds {self.path})") from None
            except OSError:  # a file system without flock
                f.close()
                raise
            if _same_file(f, self.path):
                break
            f.close()  # the owner removed the file between our open and our lock: lock the new one
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        self._file = f
        _HELD.add(self)
        _remove_killed_writes(self.folder)
        return self

    def release(self) -> None:
        if self._file is None:
            return
        self.path.unlink(missing_ok=True)  # before unlocking: a waiting opener then sees a new file
        fcntl.flock(self._file, fcntl.LOCK_UN)
        self._file.close()
        self._file = None
        _HELD.discard(self)

    def _drop_in_child(self) -> None:
        """In a forked child (a DataLoader worker): close the inherited file without unlocking, so that the lock
        goes with its owner. A child holding the file kept the folder locked after its parent was killed, until
        the child noticed and exited (a resumed training was refused meanwhile)."""
        if self._file is not None:
            self._file.close()  # the parent's descriptor still holds the lock
            self._file = None

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


_HELD: "weakref.WeakSet[FolderLock]" = weakref.WeakSet()  # the locks this process holds


def _drop_held_in_child() -> None:
    for lock in list(_HELD):
        lock._drop_in_child()
    _HELD.clear()


os.register_at_fork(after_in_child=_drop_held_in_child)


def held(folder: str | Path) -> bool:
    """Whether a process holds the folder's lock: the kernel's list of flock locks (/proc/locks) names the lock
    file's inode, so a stale file (its holder killed, its pid reused since) is not taken for a live holder. Read
    without locking, so that it never gets in the way of a writer starting. Without /proc/locks: whether the
    pid in the file is running."""
    path = Path(folder) / LOCK_FILE
    try:
        inode = str(path.stat().st_ino)
    except OSError:  # no file: released
        return False
    try:
        locks = Path("/proc/locks").read_text()
    except OSError:
        return _pid_running(path)
    # "1: FLOCK  ADVISORY  WRITE <pid> <major>:<minor>:<inode> 0 EOF" (a waiter's line has "->" after the number);
    # the inode alone: stat's device differs from the lock list's on some file systems (overlay, btrfs subvolumes),
    # and a mistaken "held" only makes a follower wait, as it did before
    return any(f[1] == "FLOCK" and f[5].rsplit(":", 1)[-1] == inode for f in map(str.split, locks.splitlines())
               if len(f) > 5)


def _pid_running(path: Path) -> bool:
    try:
        pid = int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):  # a writer between its lock and its pid
        return False
    return process_running(pid)


def process_running(pid: int) -> bool:
    """Whether a process with this pid runs on this machine (a pid reused since counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def killed_leftovers(folder: Path, pattern: str) -> list[Path]:
    """The entries of `folder` matching `pattern`, a name that ends in its writer's pid (`.NAME.tmp-PID`,
    `.SPLIT.partial-PID`), whose writer no longer runs on this machine: what a process killed before its rename left
    behind. A running writer's entry (another process, a rank of the same run, this process) is not one, nor is a
    name without a pid."""
    leftovers = []
    for path in folder.glob(pattern):
        pid = path.name.rpartition("-")[2]
        if pid.isdigit() and not process_running(int(pid)):
            leftovers.append(path)
    return leftovers


def _remove_killed_writes(folder: Path) -> None:
    """The `.NAME.tmp-PID` files in `folder` whose writer is gone (one still running, a process the holder started
    before it locked or a rank of the same run, keeps its file)."""
    for path in killed_leftovers(folder, TMP_GLOB):
        if path.is_file():
            path.unlink(missing_ok=True)


def _holder(f: IO[str], wait_s: float = 0.5) -> str:
    """The pid in a locked file; its owner writes it just after locking, so wait a moment for it."""
    deadline = time.monotonic() + wait_s
    while True:
        f.seek(0)
        pid = f.read().strip()
        if pid or time.monotonic() > deadline:
            return pid or "unknown"
        time.sleep(0.02)


def _same_file(f: IO[str], path: Path) -> bool:
    try:
        return os.fstat(f.fileno()).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False
