"""Where a run's weights came from, when that is another run's checkpoint: `<run>/origin.json`.

A run that starts from another run's checkpoint, carried on (`resume=<another run>/checkpoints/step_K`: the
same run continued in this folder) or started anew from its weights (`init_from=...`), records it in
origin.json:

    {"checkpoint": "/abs/path/<other run>/checkpoints/step_0024000", "step": 24000, "resumed": true}

The trainer writes it at every start while the run has no checkpoint of its own, and never once it has one,
so the run's first checkpoint follows what origin.json names, and launching the run again (`resume=auto`, or
one of its own checkpoints named by hand) keeps it. config.yaml, rewritten by every launch, does not: it is
read only for runs trained before origin.json existed. The learning curve (harness.train.curve) follows a run
back through these records, to charge it for the training before it and to evaluate the earlier folders'
checkpoints of a run carried on.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import NamedTuple

import yaml

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


def record_origin(run: Path, resume_from: Path | None, init_from: str | None) -> None:
    """At a start of `run` with no checkpoint of its own: origin.json for the checkpoint it starts from when
    that is another run's; none otherwise (a file a failed earlier start left is removed)."""
    origin = (_origin_of(resume_from, run, True) if resume_from is not None
              else _origin_of(Path(init_from), run, False) if init_from else None)
    path = run / ORIGIN
    if origin is None:
        path.unlink(missing_ok=True)
        return
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"checkpoint": str(origin.checkpoint), "step": origin.step, "resumed": origin.resumed}) + "\n")
    os.replace(tmp, path)


def read_origin(run: Path) -> Origin | None:
    """The run's origin.json; for a run trained before it, what its config.yaml's `resume` / `init_from`
    name (relative paths are the training's: run it from the same folder). None where the weights came from
    no other run's checkpoint folder."""
    path = run / ORIGIN
    if path.is_file():
        try:
            d = json.loads(path.read_text())
            return Origin(Path(d["checkpoint"]), int(d["step"]), bool(d["resumed"]))
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path}: not an origin record ({e}); expected {{checkpoint, step, resumed}}") from e
    config = run / "config.yaml"
    cfg = (yaml.safe_load(config.read_text()) or {}) if config.is_file() else {}
    resume = cfg.get("resume")
    if resume not in (None, "auto", "never"):
        return _origin_of(Path(resume), run, True)
    return _origin_of(Path(cfg["init_from"]), run, False) if cfg.get("init_from") else None


def lineage(run: Path) -> list[tuple[Path, Origin | None]]:
    """The run and the runs its weights came from, newest first, each with its origin (None for the first)."""
    chain: list[tuple[Path, Origin | None]] = []
    seen: set[Path] = set()
    while run is not None:
        if run.resolve() in seen:
            raise ValueError(f"{run}: the runs' origins lead back to it ({' <- '.join(str(r) for r, _ in chain)})")
        seen.add(run.resolve())
        origin = read_origin(run)
        chain.append((run, origin))
        run = origin.run if origin is not None else None
    return chain
