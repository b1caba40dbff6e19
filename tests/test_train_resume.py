"""Exact resume: SIGKILL mid-run, the same command again, and the loss curve equals an uninterrupted run's."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from harness.config_errors import ConfigError
from harness.train.optim import lr_factor
from tests.train_helpers import ENV, ROOT, cli, dataset, metrics, run_cli, train_here, weights  # noqa: F401  (fixture)

# augmentation on, head dropout on, a DataLoader worker, warmup then cosine: everything that draws randomness
# or depends on the step is exercised across the kill
RUN = ("trainer.max_steps=40", "trainer.ckpt_every=5", "trainer.val_every=10", "trainer.keep_last=0",
       "data.augment=true", "model.head.num_layers=2", "model.head.dropout=0.2", "trainer.num_workers=1",
       "optim.schedule=cosine", "optim.min_lr_ratio=0.1")


def _curve(out) -> list[tuple]:
    return [(r["step"], r.get("loss"), r.get("grad_norm"), r.get("lr"), r.get("val/loss")) for r in metrics(out)]


def stop_after_saving(monkeypatch, at_step: int):
    """Training raises KeyboardInterrupt right after it saved step `at_step`'s checkpoint; returns the undo."""
    from harness.train import trainer as T

    original = T._Saver.__call__

    def saved_then_stopped(self, step, best):
        folder = original(self, step, best)
        if step == at_step:
            raise KeyboardInterrupt(f"stopped after step {at_step}'s checkpoint")
        return folder

    monkeypatch.setattr(T._Saver, "__call__", saved_then_stopped)
    return lambda: monkeypatch.setattr(T._Saver, "__call__", original)


@pytest.fixture(scope="module")
def uninterrupted(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    run_cli(cli(dataset, out, *RUN))
    return out


def test_validation_and_checkpoints_leave_the_training_unchanged(dataset, tmp_path, uninterrupted):
    """How often a run validates and saves does not change what it trains (validation draws no randomness from
    the training's state), so a run may carry on another's checkpoints with other frequencies."""
    out = tmp_path / "other_frequencies"
    run_cli(cli(dataset, out, *RUN, "trainer.val_every=3", "trainer.ckpt_every=4"))
    train = [(r["step"], r["loss"], r["grad_norm"], r["lr"]) for r in metrics(out) if "loss" in r]
    assert train == [(r["step"], r["loss"], r["grad_norm"], r["lr"]) for r in metrics(uninterrupted) if "loss" in r]
    assert sum("val/loss" in r for r in metrics(out)) > sum("val/loss" in r for r in metrics(uninterrupted))
    w_other, w_straight = weights(out / "checkpoints" / "last"), weights(uninterrupted / "checkpoints" / "last")
    assert all(torch.equal(w_other[k], w_straight[k]) for k in w_straight)


def test_sigkill_then_the_same_command_continues_step_for_step(dataset, tmp_path, uninterrupted):
    out = tmp_path / "killed"
    args = [sys.executable, "-m", "harness.train", *cli(dataset, out, *RUN)]
    proc = subprocess.Popen(args, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    # killed once `last` names a checkpoint (a kill between a step folder's rename and the link would resume from
    # the start, which is right but not this test)
    while time.monotonic() < deadline and proc.poll() is None and not (out / "checkpoints" / "last").exists():
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "training ended before it could be killed"
    killed_at = json.loads((out / "checkpoints" / "last" / "trainer_state.json").read_text())["step"]
    assert 5 <= killed_at < 40
    assert max(r["step"] for r in metrics(out)) < 40

    resumed = run_cli(cli(dataset, out, *RUN))
    assert f"resuming after step {killed_at}" in resumed.stdout
    # one line per step (the killed run's steps after its checkpoint were dropped) and the same values, exactly
    assert _curve(out) == _curve(uninterrupted)
    w_resumed, w_straight = weights(out / "checkpoints" / "last"), weights(uninterrupted / "checkpoints" / "last")
    assert w_resumed.keys() == w_straight.keys()
    assert all(torch.equal(w_resumed[k], w_straight[k]) for k in w_straight)
    # the same trainer state too (optimizer moments, RNG, data position)
    s_resumed = load_file(str(out / "checkpoints" / "last" / "trainer_state.safetensors"))
    s_straight = load_file(str(uninterrupted / "checkpoints" / "last" / "trainer_state.safetensors"))
    assert all(torch.equal(s_resumed[k], s_straight[k]) for k in s_straight)


def test_a_finished_run_run_again_does_nothing_and_resume_never_refuses(dataset, uninterrupted):
    before = {f: (uninterrupted / f).read_text() for f in ("metrics.jsonl", "summary.json")}
    again = run_cli(cli(dataset, uninterrupted, *RUN))
    assert "resuming after step 40" in again.stdout
    assert {f: (uninterrupted / f).read_text() for f in before} == before
    with pytest.raises(ConfigError, match="already has checkpoints"):
        train_here(dataset, uninterrupted, *RUN, "resume=never")


def test_a_finished_run_given_more_steps_is_unfinished_until_it_ends(dataset, tmp_path, uninterrupted):
    """Its old summary goes when it carries on, so that a learning curve following it (`harness.train.curve
    --follow`, which stops at the summary) follows the new steps too."""
    out = tmp_path / "extended"
    shutil.copytree(uninterrupted, out)
    args = [sys.executable, "-m", "harness.train", *cli(dataset, out, *RUN, "trainer.max_steps=60")]
    proc = subprocess.Popen(args, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and not (out / "checkpoints" / "step_0000045").is_dir():
            time.sleep(0.01)
        assert (out / "checkpoints" / "step_0000045").is_dir() and not (out / "summary.json").exists()
    finally:
        proc.kill()
        proc.wait()


def test_a_run_carried_on_in_a_new_folder_goes_on_there_when_run_again(dataset, tmp_path, uninterrupted, capsys):
    """resume=<another run's checkpoint> starts the run from it (the old folder keeps its own last checkpoint);
    the same command again goes on from the new folder's last checkpoint, not from the old run's again."""
    out = tmp_path / "carried_on"
    start = f"resume={uninterrupted / 'checkpoints' / 'step_0000020'}"
    train_here(dataset, out, *RUN, start)
    assert "resuming after step 20" in capsys.readouterr().out
    assert _curve(out) == [c for c in _curve(uninterrupted) if c[0] > 20]
    before = (out / "metrics.jsonl").read_text()
    train_here(dataset, out, *RUN, start)
    said = capsys.readouterr().out
    assert "it has checkpoints of its own since: carrying on from" in said and "resuming after step 40" in said
    assert (out / "metrics.jsonl").read_text() == before
    # one of its own checkpoints named by hand is still where it resumes
    train_here(dataset, out, *RUN, f"resume={out / 'checkpoints' / 'step_0000035'}")
    assert "resuming after step 35" in capsys.readouterr().out
    assert _curve(out) == [c for c in _curve(uninterrupted) if c[0] > 20]


def test_a_constant_lr_run_carried_on_with_a_wsd_decay_keeps_its_lr_until_the_decay(dataset, tmp_path):
    """The end-of-run decay a constant-lr run can be given afterwards (optim.schedule=wsd, harness.train.optim):
    the resumed run's own lr and schedule from the checkpoint's step on, its first step included."""
    first = tmp_path / "constant"
    train_here(dataset, first, "trainer.max_steps=6", "trainer.ckpt_every=6", "optim.schedule=constant")
    start = f"resume={first / 'checkpoints' / 'step_0000006'}"
    decayed = tmp_path / "decayed"
    train_here(dataset, decayed, "trainer.max_steps=12", start, "optim.schedule=wsd", "optim.decay_steps=4",
               "optim.min_lr_ratio=0.1")
    lr = {r["step"]: r["lr"] for r in metrics(decayed) if "lr" in r}
    assert sorted(lr) == list(range(7, 13))
    assert lr[7] == lr[8] == lr[9] == pytest.approx(1e-3)  # the decay's first step is at the full lr
    assert lr[9] > lr[10] > lr[11] > lr[12] and lr[12] == pytest.approx(1e-4)
    # a decay that began before the resumed step, at another lr: already decaying at the first step
    late = tmp_path / "late"
    train_here(dataset, late, "trainer.max_steps=12", start, "optim.schedule=wsd", "optim.decay_steps=8",
               "optim.min_lr_ratio=0.1", "optim.lr=2e-3")
    lr = {r["step"]: r["lr"] for r in metrics(late) if "lr" in r}
    assert lr == pytest.approx({s: 2e-3 * lr_factor(s - 1, 2, 12, "wsd", 0.1, 8) for s in range(7, 13)})
    assert lr[7] < 2e-3


def test_a_resumed_run_sets_its_summary_aside_before_it_builds_the_model(dataset, tmp_path, uninterrupted, monkeypatch):
    """Building the model, restoring the optimizer: a follower of the run must not read the old end meanwhile. A
    run that fails there (here: its model fails to build) puts the old summary back; one killed there (no handler
    runs) leaves it aside, and run again, it finds it."""
    from agents.vla.model import VLAModel

    out = tmp_path / "extended"
    shutil.copytree(uninterrupted, out)
    seen = []

    def failing_build(*args, **kwargs):
        seen.append((out / "summary.json").exists())
        raise RuntimeError("stopped while building the model")

    monkeypatch.setattr(VLAModel, "build", failing_build)
    with pytest.raises(RuntimeError, match="stopped while building"):
        train_here(dataset, out, *RUN, "trainer.max_steps=60")
    assert seen == [False]
    assert (out / "summary.json").read_text() == (uninterrupted / "summary.json").read_text()
    assert not (out / "summary.before_resume.json").exists()
    monkeypatch.undo()
    (out / "summary.json").rename(out / "summary.before_resume.json")  # what a kill -9 while building leaves
    summary = train_here(dataset, out, *RUN)  # finished before after all: the old summary is put back
    assert summary == json.loads((uninterrupted / "summary.json").read_text())
    assert (out / "summary.json").read_text() == (uninterrupted / "summary.json").read_text()
    assert not (out / "summary.before_resume.json").exists()


def test_a_run_given_more_steps_and_stopped_after_a_new_checkpoint_has_no_summary(dataset, tmp_path, uninterrupted,
                                                                                 monkeypatch):
    """Its checkpoints are past the old end: it is an unfinished run (the old summary stays aside), and the same
    command carries it on to the new end."""
    out = tmp_path / "extended"
    shutil.copytree(uninterrupted, out, symlinks=True)
    carry_on = stop_after_saving(monkeypatch, 45)
    with pytest.raises(KeyboardInterrupt):
        train_here(dataset, out, *RUN, "trainer.max_steps=50")
    assert not (out / "summary.json").exists() and (out / "summary.before_resume.json").is_file()
    carry_on()
    with pytest.raises(ValueError, match="its optimizer has weight_decay"):  # refused: still unfinished, at step 45
        train_here(dataset, out, *RUN, "trainer.max_steps=50", "optim.weight_decay=0.1")
    assert not (out / "summary.json").exists()
    assert train_here(dataset, out, *RUN, "trainer.max_steps=50")["steps"] == 50
    assert not (out / "summary.before_resume.json").exists()


def test_init_from_takes_the_weights_but_starts_a_new_optimizer(dataset, tmp_path, uninterrupted):
    source = uninterrupted / "checkpoints" / "last"
    summary = train_here(dataset, tmp_path / "stage2", *RUN[3:], "trainer.max_steps=1", "trainer.val_every=1",
                         f"init_from={source}", "optim.lr=1e-12", "optim.warmup_steps=0")
    final_val = [r["val/loss"] for r in metrics(uninterrupted) if "val/loss" in r][-1]
    assert summary["val_loss"] == pytest.approx(final_val, rel=1e-6)  # the same weights (lr ~ 0 for one step)
    state = load_file(str(tmp_path / "stage2" / "checkpoints" / "last" / "trainer_state.safetensors"))
    steps = {float(v) for k, v in state.items() if k.endswith("/step")}
    assert steps == {1.0}  # AdamW's step count restarted: no optimizer state came with the weights


def test_trainer_state_loads_without_unpickling(uninterrupted, monkeypatch):
    import pickle

    import numpy as np

    from harness.train.state import load_trainer_state

    def refuse(*args, **kwargs):
        raise AssertionError("trainer state loading tried to unpickle")

    for module, name in ((pickle, "load"), (pickle, "loads"), (torch, "load"), (np, "load")):
        monkeypatch.setattr(module, name, refuse)
    meta, optimizer = load_trainer_state(uninterrupted / "checkpoints" / "last")
    assert meta["step"] == 40 and meta["data"]["epoch"] == 1 and len(meta["rng"]) == 1
    assert optimizer["state"] and all("exp_avg" in s for s in optimizer["state"].values())


def test_a_cpu_budget_stopped_and_resumed_spends_the_same_budget(dataset, tmp_path, monkeypatch):
    """trainer.max_cpu_s: training stops at the step whose CPU seconds reach the budget, and a run interrupted
    after a checkpoint continues with the CPU seconds it had spent, not a fresh budget. A fake CPU clock makes
    each step cost exactly 0.5 s, so the step counts are exact."""
    from harness.train.metrics import StepTimer

    ticks = iter(range(10**6))
    monkeypatch.setattr(StepTimer, "cpu_clock", staticmethod(lambda: next(ticks) * 0.5))  # start, stop: +0.5 a step
    run = ("trainer.max_steps=40", "trainer.max_cpu_s=5", "trainer.ckpt_every=2", "trainer.val_every=0")
    out = tmp_path / "budget"
    carry_on = stop_after_saving(monkeypatch, 4)
    with pytest.raises(KeyboardInterrupt):
        train_here(dataset, out, *run)
    assert json.loads((out / "checkpoints" / "last" / "trainer_state.json").read_text())["cpu_s"] == 2.0
    carry_on()
    summary = train_here(dataset, out, *run)
    # a fresh budget after the resume would have stopped at step 4 + 10
    assert (summary["steps"], summary["train_cpu_s"], summary["stopped_by"]) == (10, 5.0, "max_cpu_s")
    assert summary["parameters"]["trainable"] <= summary["parameters"]["total"]
    assert train_here(dataset, out, *run) == summary  # finished: the same command again does nothing


@pytest.mark.parametrize("change, message", [
    ("optim.weight_decay=0.1", "its optimizer has weight_decay, betas, eps"),
    ("data.normalizer.clip=0.3", "it was trained with the action normaliser"),
])
def test_a_resume_with_settings_the_checkpoint_would_override_or_contradict_is_refused(dataset, tmp_path, change,
                                                                                         message):
    """AdamW's saved groups would keep their weight decay whatever this run says, and weights trained under one
    action scaling would carry on under another: both are refused, naming the fix, before any step."""
    first = tmp_path / "first"
    train_here(dataset, first, "trainer.max_steps=2", "trainer.ckpt_every=2")
    finished = (first / "summary.json").read_text()
    with pytest.raises(ValueError, match=message):
        train_here(dataset, first, "trainer.max_steps=4", "trainer.ckpt_every=2", change)
    assert [r["step"] for r in metrics(first) if "loss" in r] == [1, 2]
    # still the finished run: its summary is back (a sweep table or a curve following it reads its end)
    assert (first / "summary.json").read_text() == finished and not (first / "summary.before_resume.json").exists()


def test_a_second_training_of_a_running_folder_is_refused_and_the_folder_is_left_to_the_first(dataset, tmp_path):
    from harness.folder_lock import FolderLock, held
    from harness.train.trainer import RUN_BUSY

    out = tmp_path / "run"
    out.mkdir()
    with FolderLock(out, RUN_BUSY):  # the first training, running
        with pytest.raises(ConfigError, match=f"output_dir: {out} is being trained by another harness.train"):
            train_here(dataset, out, "trainer.max_steps=2")
        assert held(out)  # the refused one took nothing from it
    assert sorted(p.name for p in out.iterdir()) == []
    train_here(dataset, out, "trainer.max_steps=2")  # the first one gone: the folder is free again
    assert not held(out) and (out / "summary.json").is_file()
