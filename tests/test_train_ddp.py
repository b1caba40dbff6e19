"""torchrun with 2 CPU processes (gloo): the ranks stay identical, and equal a one-process run with the same
global batch."""

from __future__ import annotations

import json

import pytest

from tests.train_helpers import (  # noqa: F401  (fixtures)
    DIST_RUN, assert_close_weights, cli, dataset, losses, metrics, run_cli, single)


def _state(out, step: int) -> dict:
    return json.loads((out / "checkpoints" / f"step_{step:07d}" / "trainer_state.json").read_text())


def test_two_ranks_stay_identical_and_equal_one_process_with_the_same_global_batch(dataset, tmp_path, single):
    out = tmp_path / "ddp"
    proc = run_cli(cli(dataset, out, *DIST_RUN, "trainer.batch_size=2"), torchrun=2)
    assert "2 rank(s) x batch 2 x 1 accumulation = 4 per step" in proc.stdout
    for step in (2, 4):  # every rank's own digest of its weights, gathered at each checkpoint
        prints = _state(out, step)["rank_fingerprints"]
        assert len(prints) == 2 and prints[0] == prints[1]
    assert _state(single, 4)["rank_fingerprints"] is None  # one process: nothing to compare
    # the same samples and the same gradient (count-weighted over ranks): the same run, up to float rounding
    assert losses(out) == pytest.approx(losses(single), rel=1e-5)
    val = [r["val/loss"] for r in metrics(out) if "val/loss" in r]
    assert val == pytest.approx([r["val/loss"] for r in metrics(single) if "val/loss" in r], rel=1e-5)
    assert_close_weights(out, single, atol=1e-5)
    # rank 0 alone wrote the run folder
    assert sorted(p.name for p in out.iterdir()) == [".hydra", "checkpoints", "config.yaml", "metrics.jsonl",
                                                     "summary.json", "tb"]
