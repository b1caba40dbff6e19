"""The run's checkpoint folders: `step_XXXXXXX/`, and `last` and `best` pointing at two of them (what one
checkpoint folder holds, and how it is written and read: agents/vla/checkpoint.py).

    <run>/checkpoints/step_0001000/   a checkpoint folder (agents.vla.checkpoint) + trainer state
    <run>/checkpoints/last -> step_0001000    the newest; resume starts here
    <run>/checkpoints/best -> step_0000500    the best by validation loss (or rollout success)

A step folder is written under a temporary name and renamed when complete, and `last`/`best` are
relative symlinks replaced atomically, so a kill at any moment leaves `last` pointing at a complete
checkpoint. `keep_last` keeps that many step folders (never the targets of `last` and `best`).
Only rank 0 calls into this module.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

LAST, BEST = "last", "best"


def step_name(step: int) -> str:
    return f"step_{step:07d}"


class RunCheckpoints:
    def __init__(self, root: str | Path, keep_last: int):
        self.root = Path(root)
        self.keep_last = keep_last

    def latest(self) -> Path | None:
        """The folder `last` points to, if there is one."""
        link = self.root / LAST
        return link.resolve() if link.exists() else None

    def save(self, step: int, write: Callable[[Path], None]) -> Path:
        """`write(folder)` fills a new step folder; then `last` points to it."""
        self.root.mkdir(parents=True, exist_ok=True)
        final = self.root / step_name(step)
        tmp = self.root / f".{step_name(step)}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        write(tmp)
        if final.exists():  # the same step saved again (e.g. best, then the last step): replace it
            shutil.rmtree(final)
        tmp.rename(final)
        self._link(LAST, final)
        self._prune()
        return final

    def link_best(self, folder: Path) -> None:
        self._link(BEST, folder)

    def _link(self, name: str, target: Path) -> None:
        tmp = self.root / f".{name}.tmp"
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        tmp.symlink_to(target.name, target_is_directory=True)
        os.replace(tmp, self.root / name)

    def _prune(self) -> None:
        if self.keep_last <= 0:
            return
        keep = {(self.root / n).resolve() for n in (LAST, BEST) if (self.root / n).exists()}
        steps = sorted(p for p in self.root.glob("step_*") if p.is_dir())
        for old in steps[: max(len(steps) - self.keep_last, 0)]:
            if old.resolve() not in keep:
                shutil.rmtree(old)
