"""A run's metrics.jsonl and TensorBoard events describe the one trajectory its checkpoints belong to."""

from __future__ import annotations

import json
import time

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from harness.train.metrics import METRICS, MetricsLogger


def test_a_restart_from_scratch_or_from_a_checkpoint_drops_the_abandoned_rows_in_both(tmp_path):
    """A first run stopped before its first checkpoint and started again from step 0, then a resume from step 50:
    metrics.jsonl and TensorBoard both show only what the checkpoints came from."""
    for value, start, steps in ((1.0, 0, (50, 100, 150)), (2.0, 0, (50,)), (3.0, 50, (100,))):
        logger = MetricsLogger(tmp_path, enabled=True, start_step=start)
        for step in steps:
            logger.log(step, {"loss": value})
        logger.close()
        time.sleep(1.1)  # TensorBoard names event files by the second
    rows = [json.loads(line) for line in (tmp_path / METRICS).read_text().splitlines()]
    assert [(r["step"], r["loss"]) for r in rows] == [(50, 2.0), (100, 3.0)]
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("train/loss")] == [(50, 2.0), (100, 3.0)]
