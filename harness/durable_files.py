"""Files that are either whole or untouched, and on disk before anything names them.

Every file a rerun reads back to decide what to do (an evaluation's run.json and results.jsonl, a recording's
recording.json, a training run's config.yaml, summary.json and metrics, a checkpoint's trainer state, a sweep
job's record) is written here: to a temporary name in the same folder, fsynced, then renamed over the old one
(and the folder fsynced).
A process killed mid-write (Ctrl-C, SIGKILL, the machine going away) leaves the previous content or the new, never
half a JSON file that stops the next run with a parse error.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import BinaryIO, Callable

# what a writer killed between its write and its rename leaves beside the file (harmless; removed by the folder's
# next writer when it takes the folder's lock (harness.folder_lock), and left out where a folder is cleared or copied)
TMP_GLOB = ".*.tmp-*"


def atomic_write(path: Path, write: Callable[[BinaryIO], None], sync_folder: bool = True) -> None:
    """Write a file so that it either has its full new content or does not change: tmp + fsync + rename, then
    the folder fsynced, so that the new name is on disk before anything that relies on it (a caller removing the
    files it merged) runs. `sync_folder=False` for many files of one folder that the caller syncs once after
    them (a recorded episode's frames)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")  # TMP_GLOB
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        if sync_folder:
            fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """`path.write_text(text)` (UTF-8), atomically."""
    data = text.encode("utf-8")
    atomic_write(path, lambda f: f.write(data))


def fsync_dir(path: Path) -> None:
    """The folder's entries on disk. Some network and FUSE file systems cannot fsync a folder (EINVAL,
    ENOTSUP): there the files in it, synced one by one, are all that can be made durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def sync_tree(folder: Path) -> None:
    """fsync every file and folder under `folder`, and `folder`."""
    for path in folder.rglob("*"):
        if path.is_symlink():
            continue
        if path.is_dir():
            fsync_dir(path)
        else:
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    fsync_dir(folder)
