"""The instruction check: validation loss of a real checkpoint with its own, reworded and other tasks' instructions."""

from __future__ import annotations

import pytest

from harness.data.config import DataConfig, build_dataset
from harness.data.windows import WindowSpec
from harness.tasks import eval_instruction, training_instruction
from harness.train.instruction_check import Reworded, instruction_check
from tests.train_helpers import dataset, metrics, train_here  # noqa: F401  (fixture)


def test_reworded_items(dataset):
    windows = build_dataset(DataConfig(path=str(dataset), val_split="training"), WindowSpec(4, 2), train=False)
    tasks = sorted(set(windows.lang.task))
    for i in range(0, len(windows), 7):
        task = windows[i]["task"]
        assert Reworded(windows, "own")[i]["instruction"] == windows[i]["instruction"]
        assert Reworded(windows, "training_phrasing")[i]["instruction"] == training_instruction(task, 0)
        other = Reworded(windows, "other_task")[i]
        assert other["task"] == task and other["instruction"] == eval_instruction(tasks[(tasks.index(task) + 1) % len(tasks)])
    with pytest.raises(ValueError, match="variant must be one of"):
        Reworded(windows, "shuffled")


def test_check_of_a_trained_checkpoint(dataset, tmp_path):
    run = tmp_path / "run"
    # trained with repeated first windows and word dropout: the training windows are read once each, whole
    train_here(dataset, run, "trainer.max_steps=6", "trainer.val_every=6", "data.val_split=training",
               "data.start_repeats=3", "data.instruction_word_dropout=0.5", "data.resample_instructions=true")
    out = instruction_check(str(run / "checkpoints" / "last"), samples=16, precision="fp32")
    assert set(out) == {"own", "training_phrasing", "other_task", "training_windows"}
    # the split's own instructions: exactly the trainer's validation pass
    assert out["own"] == pytest.approx(next(r["val/loss"] for r in metrics(run) if r["step"] == 6 and "val/loss" in r), rel=1e-5)
    assert out["other_task"] != out["own"]  # the instruction reaches the loss
    assert out["training_windows"] == pytest.approx(out["own"], rel=1e-6)  # validation is the training split here
