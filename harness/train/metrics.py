"""Rank 0's record of a run: metrics.jsonl (one JSON object per logged step) and TensorBoard scalars; and
`StepTimer`, the seconds per step, the share spent waiting for data and the samples per second it logs.

Every line of metrics.jsonl has `step` and the values logged at that step: training lines `loss`,
`loss/<source>`, the action loss parts, `lr`, `grad_norm` (before clipping), `samples_per_s`, ...;
validation lines `val/...`; rollout lines `rollout/...`; a saved checkpoint's line its digest
(`checkpoint/weights`). A resumed run first drops the lines after the step it resumes from (the killed run's steps
that its checkpoint does not cover), so the file always describes the one trajectory that the checkpoints belong
to; TensorBoard is told the same (`purge_step`).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Mapping

from harness.durable_files import atomic_write_text

METRICS = "metrics.jsonl"
CHECKPOINT_WEIGHTS = "checkpoint/weights"  # a saved step's agents.vla.layout.checkpoint_digest


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl (a torn last line, from a kill mid-write, is skipped)."""
    out = []
    for line in Path(path).read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def _truncate(path: Path, after_step: int) -> None:
    if path.exists():
        kept = [r for r in read_metrics(path) if r["step"] <= after_step]
        # a kill meanwhile leaves the whole history, never a part of it
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))


class MetricsLogger:
    def __init__(self, run_dir: Path, enabled: bool, start_step: int):
        self.enabled = enabled
        self.path = run_dir / METRICS
        self._file = None
        self._tb = None
        if not enabled:
            return
        from torch.utils.tensorboard import SummaryWriter

        _truncate(self.path, start_step)
        self._file = self.path.open("a")
        self._tb = SummaryWriter(str(run_dir / "tb"), purge_step=start_step + 1)

    def log(self, step: int, values: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        record = {"step": step, **values}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        for key, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                self._tb.add_scalar(key if "/" in key else f"train/{key}", value, step)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._tb.close()


class StepTimer:
    """Seconds per training step (data included; validation, saving and rollouts not), the share of it
    spent waiting for data, and samples per second, since the last report and over the run; and the
    run's cumulative step seconds, wall and CPU (this process's threads), which checkpoints carry across
    a resume (`cpu_s`, `wall_s`)."""

    cpu_clock = staticmethod(time.process_time)  # CPU seconds of this process, all threads

    def __init__(self) -> None:
        self.t0 = self.t_data = self.cpu0 = 0.0
        self.steps = self.samples = 0
        self.busy_s = self.data_s = 0.0
        self.total_samples, self.total_s = 0, 0.0
        self.cpu_s = self.wall_s = 0.0

    def start(self) -> None:
        self.t0 = time.perf_counter()
        self.cpu0 = self.cpu_clock()

    def data_ready(self) -> None:
        self.data_s += time.perf_counter() - self.t0

    def stop(self, samples: int) -> None:
        wall = time.perf_counter() - self.t0
        self.busy_s += wall
        self.wall_s += wall
        self.cpu_s += self.cpu_clock() - self.cpu0
        self.steps += 1
        self.samples += samples

    def report(self) -> dict[str, float]:
        out = {"samples_per_s": self.samples / self.busy_s, "step_s": self.busy_s / self.steps,
               "data_s": self.data_s / self.steps}
        self.total_samples += self.samples
        self.total_s += self.busy_s
        self.steps = self.samples = 0
        self.busy_s = self.data_s = 0.0
        return out

    def mean_rate(self) -> float | None:
        return self.total_samples / self.total_s if self.total_s else None
