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

import json
import os
import shutil
from pathlib import Path
from typing import Callable

from harness.durable_files import fsync_dir, sync_tree
from harness.train.state import STATE_JSON

LAST, BEST = "last", "best"


def step_name(step: int) -> str:
    return f"step_{step:07d}"


class RunCheckpoints:
    def __init__(self, root: str | Path, keep_last: int):
        self.root = Path(root)
        self.keep_last = keep_last

    def latest(self) -> Path | None:
        """The folder `last` points to, if there is one. `last` and `best` must be links: copied as folders (a run
        folder copied with its links followed) they would resume, then fail at the first save, so they become
        links again; a `last` naming no folder would start the run again from step 0 over the old one, so it is
        refused, naming the fix, unless a kill while a step was saved again left it so (then it is put back)."""
        for name in (LAST, BEST):
            if (self.root / name).exists() and not (self.root / name).is_symlink():
                self._relink_copy(name)
        link = self.root / LAST
        if link.is_symlink() and not link.exists():
            target = os.readlink(link)
            aside = self.root / f".{target}.old"
            if not aside.is_dir():
                raise RuntimeError(f"{link} points to {target}, which does not exist: point it at the newest complete "
                                   f"step folder (ln -sfn step_XXXXXXX {link}), or choose another run folder")
            aside.rename(self.root / target)  # saved again (save), killed before the new folder took its name
        return link.resolve() if link.exists() else None

    def _relink_copy(self, name: str) -> None:
        """`last` or `best` as a folder: a run folder copied with its links followed (shutil.copytree, rsync -L,
        a bucket sync). Its trainer_state.json names the step: the folder becomes that step's folder again (or
        goes, where the copy holds that step's folder too) and the name a link to it."""
        folder = self.root / name
        try:
            step = int(json.loads((folder / STATE_JSON).read_text())["step"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise RuntimeError(f"{folder} is a folder, not a link to a step folder, and its {STATE_JSON} does not say "
                               f"which step it holds ({e}): replace it by a link, e.g. rm -r {folder} && ln -s "
                               f"step_XXXXXXX {folder}") from None
        target = self.root / step_name(step)
        if target.exists():
            shutil.rmtree(folder)  # the same checkpoint twice
        else:
            folder.rename(target)
        self._link(name, target)
        print(f"{folder} was a copy of {target.name} (a run folder copied with its links followed): a link again",
              flush=True)

    def save(self, step: int, write: Callable[[Path], None]) -> Path:
        """`write(folder)` fills a new step folder; then `last` points to it."""
        self.root.mkdir(parents=True, exist_ok=True)
        final = self.root / step_name(step)
        tmp = self.root / f".{step_name(step)}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        write(tmp)
        sync_tree(tmp)  # on disk before its name: a machine gone after the rename must not leave `last` on torn weights
        aside = self.root / f".{step_name(step)}.old"
        if final.exists():  # the same step saved again (a resume from an earlier step): the old one goes aside
            shutil.rmtree(aside, ignore_errors=True)  # until the new one has its name (latest() puts it back
            final.rename(aside)                       # after a kill in between)
        tmp.rename(final)
        self._link(LAST, final)
        fsync_dir(self.root)  # the new name and `last`
        shutil.rmtree(aside, ignore_errors=True)
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
