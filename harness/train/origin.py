"""Where a run's weights came from, when that is another run's checkpoint: `<run>/origin.json`.

A run that starts from another run's checkpoint, carried on (`resume=<another run>/checkpoints/step_K`: the
same run continued in this folder) or started anew from its weights (`init_from=...`), records it in
origin.json (the checkpoint's path relative to the run folder, so that folders moved together keep it, and
absolute):

    {"checkpoint": "../other_run/checkpoints/step_0024000", "absolute": "/abs/path/other_run/checkpoints/step_0024000",
     "step": 24000, "resumed": true}

The trainer writes it at every start while the run has no checkpoint of its own, and never once it has one,
so the run's first checkpoint follows what origin.json names, and launching the run again (`resume=auto`, or
one of its own checkpoints named by hand) keeps it. config.yaml, rewritten by every launch, does not: it is
read only for runs trained before origin.json existed, and the trainer moves what it says into origin.json
before a launch rewrites it. The learning curve (harness.train.curve) follows a run back through these
records, to charge it for the training before it and to evaluate the earlier folders' checkpoints of a run
carried on.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import NamedTuple

import yaml

from harness.durable_files import atomic_write_text
from harness.train.state import STATE_JSON

ORIGIN = "origin.json"


class Origin(NamedTuple):
    """Another run's checkpoint a run's weights came from."""

    checkpoint: Path
    step: int
    resumed: bool  # True: the same run carried on (resume=); False: a new run from its weights (init_from)

    @property
    def run(self) -> Path:
        return self.checkpoint.parent.parent  # <run>/checkpoints/step_K


def _origin_of(checkpoint: Path, run: Path, resumed: bool) -> Origin | None:
    """The origin for a checkpoint folder when it is a step checkpoint of another run (not of `run`)."""
    folder = checkpoint.resolve()
    state = folder / STATE_JSON
    if folder.parent.name != "checkpoints" or folder.parent.parent == run.resolve() or not state.is_file():
        return None  # weights from outside a run (e.g. downloaded), or this run's own checkpoint
    return Origin(folder, int(json.loads(state.read_text())["step"]), resumed)


def _write(run: Path, origin: Origin) -> None:
    record = {"checkpoint": os.path.relpath(origin.checkpoint, run.resolve()), "absolute": str(origin.checkpoint),
              "step": origin.step, "resumed": origin.resumed}
    atomic_write_text(run / ORIGIN, json.dumps(record) + "\n")


def record_origin(run: Path, resume_from: Path | None, init_from: str | None, has_checkpoints: bool) -> None:
    """Called by the trainer at each start, before it rewrites config.yaml. With no checkpoint of the run's own:
    origin.json for the checkpoint it starts from when that is another run's, none otherwise (a file a failed
    earlier start left is removed). With checkpoints: kept; for a run trained before origin.json, what its
    config.yaml says is written into it first."""
    path = run / ORIGIN
    if has_checkpoints:
        earlier = None if path.is_file() else read_origin(run)
        if earlier is not None:
            _write(run, earlier)
        return
    if resume_from is not None:
        origin = _origin_of(resume_from, run, resumed=True)
    elif init_from:
        origin = _origin_of(Path(init_from), run, resumed=False)
    else:
        origin = None
    if origin is None:
        path.unlink(missing_ok=True)
    else:
        _write(run, origin)


def read_origin(run: Path) -> Origin | None:
    """The run's origin.json; for a run trained before it, what its config.yaml's `resume` / `init_from`
    name (relative paths are the training's: run it from the same folder). None where the weights came from
    no other run's checkpoint folder."""
    path = run / ORIGIN
    if path.is_file():
        try:
            d = json.loads(path.read_text())
            relative = (run.resolve() / d["checkpoint"]).resolve()
            checkpoint = relative if relative.is_dir() else Path(d["absolute"])
            return Origin(checkpoint, int(d["step"]), bool(d["resumed"]))
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path}: not an origin record ({e}); expected checkpoint, absolute, step, resumed") from e
    config = run / "config.yaml"
    cfg = (yaml.safe_load(config.read_text()) or {}) if config.is_file() else {}
    resume = cfg.get("resume")
    if resume not in (None, "auto", "never"):
        return _origin_of(Path(resume), run, resumed=True)
    return _origin_of(Path(cfg["init_from"]), run, resumed=False) if cfg.get("init_from") else None


def lineage(run: Path) -> list[tuple[Path, Origin | None]]:
    """The run and the runs its weights came from, newest first, each with its origin (None for the first).
    An origin whose run folder is gone ends it, with a warning: nothing before it can be counted."""
    chain: list[tuple[Path, Origin | None]] = []
    seen: set[Path] = set()
    while run is not None:
        if run.resolve() in seen:
            raise ValueError(f"{run}: the runs' origins lead back to it ({' <- '.join(str(r) for r, _ in chain)})")
        seen.add(run.resolve())
        origin = read_origin(run)
        chain.append((run, origin))
        if origin is not None and not origin.run.is_dir():
            warnings.warn(f"{run}: started from {origin.checkpoint}, whose run folder is gone: its training before "
                          "is not counted", stacklevel=2)
            break
        run = origin.run if origin is not None else None
    return chain
