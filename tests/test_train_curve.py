"""The learning curve: each kept checkpoint of a real tiny run evaluated in the simulator, against training hours."""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import replace

import pytest

from agents.vla.layout import checkpoint_digest
from harness.eval.config import EvalSettings
from harness.train.curve import (at_step, curve_row, due_checkpoints, first_step, hours_up_to, main, run_curve,
                                 training_hours, warm_start_hours)
from harness.train.origin import ORIGIN, Origin, lineage, read_origin, record_origin
from tests.train_helpers import dataset, metrics, train_here  # noqa: F401  (fixture)


def test_training_hours_sum_the_logged_step_times():
    records = [{"step": 2, "step_s": 3.0}, {"step": 2, "val/loss": 1.0}, {"step": 5, "step_s": 6.0},
               {"step": 5, "rollout/score": 0.0}]
    hours = training_hours(records)
    assert hours == pytest.approx({0: 0.0, 2: 6.0 / 3600, 5: (6.0 + 18.0) / 3600})
    # a checkpoint between two lines (ckpt_every no multiple of log_every): the line's mean step time up to it
    assert at_step(hours, 4) == pytest.approx((6.0 + 2 * 6.0) / 3600) and at_step(hours, 1) == pytest.approx(3.0 / 3600)
    assert at_step(hours, 6) is None  # past the last line: unknown
    assert hours_up_to(hours, 6) == pytest.approx(24.0 / 3600) and hours_up_to(hours, 4) == at_step(hours, 4)
    row = curve_row(4, {"mode": "single_task", "mean_task_success_rate": 0.5, "intervals": {"success_rate": None},
                        "tasks": {}}, [{"step": 2, "epoch": 0.2, "step_s": 3.0}, {"step": 5, "epoch": 0.5}], hours)
    assert row["train_hours"] == pytest.approx(18.0 / 3600) and row["epoch"] == pytest.approx(0.4)


def test_single_task_row_has_the_interval_of_the_rate_over_all_episodes():
    results = {"mode": "single_task", "mean_task_success_rate": 0.25,
               "intervals": {"success_rate": {"low": 0.1, "high": 0.5}},
               "tasks": {"open_drawer": {"rate": 0.5}, "lift_red_block_table": {"rate": 0.0}}}
    row = curve_row(4, results, [{"step": 4, "epoch": 0.5, "step_s": 1.0}], {4: 0.01})
    assert row == {"step": 4, "epoch": 0.5, "train_hours": 0.01, "warm_start_hours": 0.0, "val_loss": None, "mean_task_success": 0.25,
                   "mean_task_success_low": 0.1, "mean_task_success_high": 0.5, "open_drawer": 0.5,
                   "lift_red_block_table": 0.0}
    assert curve_row(4, {**results, "intervals": {"success_rate": None}}, [], {})["mean_task_success_low"] is None


def test_curve_of_a_run_evaluates_each_due_checkpoint_once(dataset, tmp_path):
    run = tmp_path / "run"
    train_here(dataset, run, "trainer.max_steps=4", "trainer.ckpt_every=1", "trainer.keep_last=0", "trainer.val_every=2")
    settings = EvalSettings(mode="chains", num_chains=2, ep_len=3, workers=0, progress=False, videos=0, video_failures=0)
    rows = run_curve(run, settings, every=2)
    assert [r["step"] for r in rows] == [2, 4]  # step_1 and step_3 are not multiples of 2
    lines = metrics(run)
    assert rows[0]["train_hours"] == pytest.approx(sum(r["step_s"] for r in lines if "step_s" in r and r["step"] <= 2) / 3600)
    assert 0 < rows[0]["train_hours"] < rows[1]["train_hours"]
    assert rows[1]["val_loss"] == next(r["val/loss"] for r in lines if r["step"] == 4 and "val/loss" in r)
    assert all(0 <= r["avg_seq_len"] <= 5 and set(r) >= {"chain_sr_1", "chain_sr_5", "epoch"} for r in rows)
    assert all(r["avg_seq_len_low"] <= r["avg_seq_len"] <= r["avg_seq_len_high"] for r in rows)
    folder = run / "curve" / "chains"
    with (folder / "curve.csv").open() as f:
        table = list(csv.DictReader(f))
    assert [int(r["step"]) for r in table] == [2, 4] and (folder / "curve.png").stat().st_size > 1000
    assert "| step | epoch | train_hours | warm_start_hours | val_loss | avg_seq_len |" in (folder / "curve.md").read_text()

    # the same command again evaluates nothing anew: each checkpoint's evaluation resumes complete
    jsonl = folder / "step_0000004" / "results.jsonl"
    before = jsonl.read_text()
    assert [r["avg_seq_len"] for r in run_curve(run, settings, every=2)] == [r["avg_seq_len"] for r in rows]
    assert jsonl.read_text() == before
    # --follow on a finished run (summary.json written) evaluates what is due and returns
    assert [r["step"] for r in run_curve(run, settings, every=2, follow=True, poll_s=0.01)] == [2, 4]


def test_a_checkpoint_pruned_before_its_turn_is_skipped(dataset, tmp_path, monkeypatch, capsys):
    """trainer.keep_last>0 can prune a listed checkpoint while the curve evaluates an earlier one: the curve
    process died on it (ValueError from the agent check); now it says so and goes on."""
    import harness.train.curve as curve

    run = tmp_path / "run"
    train_here(dataset, run, "trainer.max_steps=4", "trainer.ckpt_every=2", "trainer.keep_last=0", "trainer.val_every=2")
    settings = EvalSettings(mode="chains", num_chains=1, ep_len=2, workers=0, progress=False, videos=0, video_failures=0)
    evaluate = curve.evaluate_checkpoint

    def prune_the_next(folder, out, *args):  # the trainer pruning step_4 while step_2 is evaluated
        if folder.name == "step_0000002":
            shutil.rmtree(run / "checkpoints" / "step_0000004")
        return evaluate(folder, out, *args)

    monkeypatch.setattr(curve, "evaluate_checkpoint", prune_the_next)
    rows = run_curve(run, settings, every=2, follow=True, poll_s=0.01)
    assert [r["step"] for r in rows] == [2]
    assert "step_0000004: gone before its turn" in capsys.readouterr().err


def test_a_run_started_from_another_runs_weights_is_charged_for_them(dataset, tmp_path):
    """A curriculum's stages: the hours of each run up to the checkpoint the next one started from, added up."""
    first, second, third = tmp_path / "first", tmp_path / "second", tmp_path / "third"
    train_here(dataset, first, "trainer.max_steps=4", "trainer.ckpt_every=2", "trainer.keep_last=0")
    train_here(dataset, second, "trainer.max_steps=2", f"init_from={first}/checkpoints/step_0000002")
    train_here(dataset, third, "trainer.max_steps=2", f"init_from={second}/checkpoints/last")

    def hours(run, up_to):
        return sum(r["step_s"] for r in metrics(run) if "step_s" in r and r["step"] <= up_to) / 3600

    assert warm_start_hours(first) == 0.0
    assert warm_start_hours(second) == pytest.approx(hours(first, 2)) and hours(first, 2) < hours(first, 4)
    assert warm_start_hours(third) == pytest.approx(hours(second, 2) + hours(first, 2))
    results = {"mode": "chains", "avg_seq_len": 0.0, "intervals": {"avg_seq_len": None}, "chain_sr": {}}
    row = curve_row(2, results, metrics(third), training_hours(metrics(third)), warm_start_hours(third))
    assert row["train_hours"] == pytest.approx(hours(third, 2) + warm_start_hours(third))
    assert read_origin(third) == Origin((second / "checkpoints" / "step_0000002").resolve(), 2, False)
    # a run trained before origin.json: its config.yaml's init_from says the same
    (second / ORIGIN).unlink()
    assert read_origin(second) == Origin((first / "checkpoints" / "step_0000002").resolve(), 2, False)
    # weights from outside a run folder (no metrics.jsonl beside them) cost nothing that can be read
    (first / "metrics.jsonl").unlink()
    assert warm_start_hours(second) == 0.0


def test_a_run_carried_on_in_a_new_folder_counts_the_old_runs_hours_once(dataset, tmp_path):
    """resume=<another run's checkpoint at step K>: the old run's hours up to K, then its own steps from K on."""
    first, carried = tmp_path / "first", tmp_path / "carried"
    train_here(dataset, first, "trainer.max_steps=4", "trainer.ckpt_every=2", "trainer.keep_last=0")
    train_here(dataset, carried, "trainer.max_steps=6", f"resume={first}/checkpoints/step_0000002")
    own = {r["step"]: r["step_s"] for r in metrics(carried) if "step_s" in r}
    assert sorted(own) == [3, 4, 5, 6]
    assert read_origin(carried) == Origin((first / "checkpoints" / "step_0000002").resolve(), 2, True)
    assert read_origin(first) is None and not (first / ORIGIN).exists()
    assert first_step(carried) == 2 and first_step(first) == 0
    assert warm_start_hours(carried) == pytest.approx(sum(r["step_s"] for r in metrics(first) if "step_s" in r and r["step"] <= 2) / 3600)
    hours = training_hours(metrics(carried), first_step(carried))
    assert hours[3] == pytest.approx(own[3] / 3600) and hours[6] == pytest.approx(sum(own.values()) / 3600)
    # run again, the same command carries on from its own checkpoints: still carried on from the first run; so
    # after resume=auto or one of its own checkpoints named by hand (config.yaml then no longer names the first)
    recorded = (carried / ORIGIN).read_text()
    train_here(dataset, carried, "trainer.max_steps=6", f"resume={first}/checkpoints/step_0000002")
    assert first_step(carried) == 2
    train_here(dataset, carried, "trainer.max_steps=7", "resume=auto")
    train_here(dataset, carried, "trainer.max_steps=8", f"resume={carried}/checkpoints/step_0000007")
    assert (carried / ORIGIN).read_text() == recorded and first_step(carried) == 2
    # a run trained before origin.json: its config.yaml says where it came from
    (carried / ORIGIN).unlink()
    assert read_origin(carried) is None  # its config.yaml names its own checkpoint now


def test_the_curve_of_a_run_carried_on_in_new_folders_is_the_whole_runs(dataset, tmp_path):
    """first (steps 1-4) -> second (resume= first's step 2; steps 3-6) -> third (resume= second's step 4; 5-8):
    the curve of third reads first's step 2, second's step 4 and its own 6 and 8; first's own step 4 and
    second's step 6 are not this run's (it carried on from earlier steps)."""
    first, second, third = tmp_path / "first", tmp_path / "second", tmp_path / "third"
    keep = ("trainer.ckpt_every=2", "trainer.keep_last=0")
    train_here(dataset, first, "trainer.max_steps=4", *keep)
    train_here(dataset, second, "trainer.max_steps=6", f"resume={first}/checkpoints/step_0000002", *keep)
    train_here(dataset, third, "trainer.max_steps=8", f"resume={second}/checkpoints/step_0000004", *keep)
    assert [(c.step, c.run) for c in due_checkpoints(third, 2)] == [(2, first), (4, second), (6, third), (8, third)]
    assert [c.step for c in due_checkpoints(third, 4)] == [4, 8]
    assert [c.step for c in due_checkpoints(third, 3)] == [6, 8]  # a finished run's last step is due whatever N
    assert [c.step for c in due_checkpoints(second, 4)] == [4, 6]  # second on its own: its last step, 6
    settings = EvalSettings(mode="chains", num_chains=1, ep_len=2, workers=0, progress=False, videos=0, video_failures=0)
    rows = run_curve(third, settings, every=2)
    assert [(r["step"], r["run"]) for r in rows] == [(2, "first"), (4, "second"), (6, "third"), (8, "third")]

    def own_hours(run, after, up_to):
        return sum(r["step_s"] for r in metrics(run) if "step_s" in r and after < r["step"] <= up_to) / 3600

    assert rows[0]["train_hours"] == pytest.approx(own_hours(first, 0, 2)) and rows[0]["warm_start_hours"] == 0.0
    assert rows[1]["train_hours"] == pytest.approx(own_hours(first, 0, 2) + own_hours(second, 2, 4))
    assert rows[3]["train_hours"] == pytest.approx(own_hours(first, 0, 2) + own_hours(second, 2, 4) + own_hours(third, 4, 8))
    assert [r["step"] for r in rows] == sorted(r["step"] for r in rows)
    assert sorted(p.name for p in (third / "curve" / "chains").glob("step_*")) == [f"step_000000{k}" for k in (2, 4, 6, 8)]
    assert not (first / "curve").exists() and not (second / "curve").exists()


def _checkpoint(run, step=2):
    folder = run / "checkpoints" / f"step_{step:07d}"
    folder.mkdir(parents=True)
    (folder / "trainer_state.json").write_text(json.dumps({"step": step}))
    return folder


def test_origin_json_follows_the_start_until_the_first_checkpoint_then_stays(tmp_path):
    runs = tmp_path / "runs"
    a, b, c = (_checkpoint(runs / name) for name in "abc")
    run = runs / "c"
    record_origin(run, a, None, has_checkpoints=False)
    assert read_origin(run) == Origin(a.resolve(), 2, True)
    # a start that failed before its first checkpoint, started again from other weights or from none
    record_origin(run, None, str(b), has_checkpoints=False)
    assert read_origin(run) == Origin(b.resolve(), 2, False)
    record_origin(run, None, None, has_checkpoints=False)
    assert not (run / ORIGIN).exists()
    # once the run has checkpoints, a launch naming its own one keeps what was recorded
    record_origin(run, a, None, has_checkpoints=False)
    record_origin(run, c, None, has_checkpoints=True)
    assert read_origin(run) == Origin(a.resolve(), 2, True)
    # folders moved together keep their origins (the path relative to the run)
    runs.rename(tmp_path / "moved")
    moved = tmp_path / "moved"
    assert read_origin(moved / "c") == Origin((moved / "a" / "checkpoints" / "step_0000002").resolve(), 2, True)
    # an origin whose folder is gone ends the lineage, saying so
    shutil.rmtree(moved / "a")
    with pytest.warns(UserWarning, match="whose run folder is gone"):
        assert [r for r, _ in lineage(moved / "c")] == [moved / "c"]


def test_a_run_trained_before_origin_json_keeps_what_its_config_said_when_launched_again(tmp_path):
    a = _checkpoint(tmp_path / "a")
    run = tmp_path / "c"
    own = _checkpoint(run, 4)
    (run / "config.yaml").write_text(f"resume: {a}\ninit_from: null\n")
    assert read_origin(run) == Origin(a.resolve(), 2, True)  # from config.yaml
    record_origin(run, own, None, has_checkpoints=True)  # the launch, before it rewrites config.yaml
    (run / "config.yaml").write_text("resume: auto\ninit_from: null\n")
    assert read_origin(run) == Origin(a.resolve(), 2, True)  # from origin.json


def test_origins_that_lead_back_to_a_run_are_refused_and_a_bad_record_is_named(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    of_a, of_b = _checkpoint(a), _checkpoint(b)
    record_origin(a, of_b, None, has_checkpoints=False)
    record_origin(b, of_a, None, has_checkpoints=False)
    with pytest.raises(ValueError, match="the runs' origins lead back to it"):
        lineage(a)
    (b / ORIGIN).unlink()
    assert [r for r, _ in lineage(a)] == [a, b.resolve()]
    (a / ORIGIN).write_text('{"step": 2}')
    with pytest.raises(ValueError, match=f"{ORIGIN}: not an origin record"):
        read_origin(a)


def test_cli_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main([str(tmp_path)])
    assert "no checkpoints/ folder" in capsys.readouterr().err


ONE_SHORT_CHAIN = EvalSettings(mode="chains", num_chains=1, ep_len=2, workers=0, progress=False, videos=0,
                               video_failures=0)


def _trainer(run, holding: bool):
    """A stand-in for a training of `run`: its folder lock, taken by this process (whose pid is live)."""
    from harness.folder_lock import FolderLock
    from harness.train.trainer import RUN_BUSY

    lock = FolderLock(run, RUN_BUSY)
    return lock.acquire() if holding else lock


def _follow(run, monkeypatch, trainer, at_poll) -> tuple[list[dict], int]:
    """`--follow` on `run`'s curve, which calls at_poll(n) at its n-th poll instead of sleeping; returns its rows and
    how many polls it made. `trainer` (_trainer) is let go of in the end."""
    import harness.train.curve as curve

    polls = []

    def poll(seconds):
        polls.append(seconds)
        at_poll(len(polls))

    monkeypatch.setattr(curve.time, "sleep", poll)
    try:
        return run_curve(run, ONE_SHORT_CHAIN, every=2, follow=True, poll_s=0.01), len(polls)
    finally:
        trainer.release()


def _trained(dataset, run, summary: bool = True) -> str:
    """A run of 2 steps with its checkpoint at step 2; without its summary (as a killed trainer leaves it) unless
    told; returns the summary's text."""
    from harness.train.trainer import SUMMARY

    train_here(dataset, run, "trainer.max_steps=2", "trainer.ckpt_every=2", "trainer.keep_last=0")
    text = (run / SUMMARY).read_text()
    if not summary:
        (run / SUMMARY).unlink()
    return text


def test_follow_stops_with_a_message_once_the_training_stopped_before_its_end(dataset, tmp_path, capsys, monkeypatch):
    """A trainer killed before its summary: --follow polled forever. Now, with no process holding the run folder
    (the trainer's lock) two polls in a row, it evaluates what the run left and stops, saying why."""
    import harness.train.curve as curve

    run = tmp_path / "run"
    _trained(dataset, run, summary=False)  # as a trainer killed after its checkpoint leaves it
    # the command line's settings (CALVIN's 360 steps a subtask), so that main() below resumes this evaluation
    settings = EvalSettings(mode="chains", num_chains=1, workers=0, progress=False, videos=0, video_failures=0)
    with pytest.raises(curve.TrainingStopped, match="no training is running there and the run has not finished"):
        run_curve(run, settings, every=2, follow=True, poll_s=0.01)
    assert (run / "curve" / "chains" / "step_0000002" / "results.json").is_file()  # evaluated before it stopped
    polls = []
    monkeypatch.setattr(curve.time, "sleep", polls.append)  # the command's poll is a minute
    with pytest.raises(SystemExit) as stopped:
        main([str(run), "--every", "2", "--chains", "1", "--workers", "0", "--follow"])
    assert polls == [curve.POLL_S]  # one poll without a trainer, then the second
    assert "1 checkpoint(s) evaluated so far" in str(stopped.value.code)


def test_follow_waits_while_a_training_holds_the_run_folder(dataset, tmp_path, monkeypatch):
    from harness.train.trainer import SUMMARY

    run = tmp_path / "run"
    summary = _trained(dataset, run, summary=False)
    trainer = _trainer(run, holding=True)

    def the_training_ends_on_the_third_poll(n):
        if n == 3:
            (run / SUMMARY).write_text(summary)  # a trainer writes its summary, then lets go of the folder
            trainer.release()

    rows, polls = _follow(run, monkeypatch, trainer, the_training_ends_on_the_third_poll)
    assert [r["step"] for r in rows] == [2] and polls == 3


def test_a_rerun_beside_a_resumed_training_waits_a_poll_for_its_trainer(dataset, tmp_path, monkeypatch):
    """The same e2e command run again starts the curve and the trainer together: the curve's first rounds take up
    its finished evaluations within seconds, while the trainer is still starting. Counted as two polls without a
    trainer, they stopped the curve (TrainingStopped) for the whole sitting."""
    from harness.train.trainer import SUMMARY

    run = tmp_path / "run"
    summary = _trained(dataset, run, summary=False)
    run_curve(run, ONE_SHORT_CHAIN, every=2, poll_s=0.01)  # the first sitting's curve evaluated step 2
    trainer = _trainer(run, holding=False)

    def the_trainer_takes_the_folder_then_ends(n):
        if n == 1:
            trainer.acquire()
        else:
            (run / SUMMARY).write_text(summary)
            trainer.release()

    rows, polls = _follow(run, monkeypatch, trainer, the_trainer_takes_the_folder_then_ends)
    assert [r["step"] for r in rows] == [2] and polls == 2


def test_an_old_summary_does_not_end_the_curve_while_a_trainer_holds_the_folder(dataset, tmp_path, monkeypatch):
    """A finished run given more steps: its trainer holds the folder a moment before it sets the old summary
    aside. The curve ended there, before the new steps."""
    run = tmp_path / "run"
    _trained(dataset, run)
    trainer = _trainer(run, holding=True)
    rows, polls = _follow(run, monkeypatch, trainer, lambda n: trainer.release())
    assert [r["step"] for r in rows] == [2] and polls == 1


def test_a_moved_run_keeps_its_evaluations_and_a_step_trained_again_is_evaluated_anew(dataset, tmp_path, capsys):
    """The evaluations named a checkpoint by its absolute path: a moved run folder was refused, and a step
    trained again (resumed from before it, with other settings) kept the old model's evaluation. Now the
    checkpoint's digest names it."""
    run = tmp_path / "run"
    train_here(dataset, run, "trainer.max_steps=2", "trainer.ckpt_every=1", "trainer.keep_last=0")
    settings = EvalSettings(mode="chains", num_chains=1, ep_len=2, workers=0, progress=False, videos=0, video_failures=0)
    run_curve(run, settings, every=2)
    moved = tmp_path / "disk2" / "run"
    shutil.move(run, moved)
    jsonl = moved / "curve" / "chains" / "step_0000002" / "results.jsonl"
    before = jsonl.read_text()
    run_curve(moved, settings, every=2)
    assert jsonl.read_text() == before  # nothing evaluated anew
    run_json = json.loads((jsonl.parent / "run.json").read_text())
    assert run_json["agent"]["kwargs"]["checkpoint"] == str((moved / "checkpoints" / "step_0000002").resolve())
    digest = run_json["weights"]

    # step 2 trained again from step 1 with another learning rate: another model under the same name
    train_here(dataset, moved, "trainer.max_steps=2", "trainer.ckpt_every=1", "trainer.keep_last=0", "optim.lr=0.01",
               f"resume={moved}/checkpoints/step_0000001")
    capsys.readouterr()
    run_curve(moved, settings, every=2)
    assert "step_0000002: trained again since its evaluation (another checkpoint digest): evaluated anew" in capsys.readouterr().err
    assert json.loads((jsonl.parent / "run.json").read_text())["weights"] != digest


def test_a_rerun_keeps_the_rows_of_checkpoints_pruned_since_their_evaluation(dataset, tmp_path, capsys):
    """trainer.keep_last > 0 prunes checkpoints the curve (--follow) has evaluated: a rerun listed only the
    checkpoints still there and rewrote curve.csv without the others' rows. Their finished evaluations stay rows
    when they are of the rerun's settings; of other ones (more chains) they cannot be redone and are left out."""
    run = tmp_path / "run"
    train_here(dataset, run, "trainer.max_steps=4", "trainer.ckpt_every=2", "trainer.keep_last=0")
    settings = EvalSettings(mode="chains", num_chains=1, ep_len=2, workers=0, progress=False, videos=0, video_failures=0)
    rows = run_curve(run, settings, every=2)
    shutil.rmtree(run / "checkpoints" / "step_0000002")  # pruned, as keep_last=1 would have
    again = run_curve(run, settings, every=2)
    assert [r["step"] for r in again] == [2, 4] and again[0] == rows[0]  # the same row, hours and run column too
    with (run / "curve" / "chains" / "curve.csv").open() as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [2, 4]
    capsys.readouterr()
    more = run_curve(run, replace(settings, num_chains=2), every=2)
    assert [r["step"] for r in more] == [4]
    assert "step_0000002: its checkpoint is gone (pruned) and its evaluation has other settings" in capsys.readouterr().err


def test_a_pruned_step_trained_again_since_its_evaluation_loses_its_row(dataset, tmp_path, capsys):
    """The run's metrics.jsonl records the digest of each checkpoint it saves; once a step's folder is pruned, its
    evaluation is a row only while that record names the weights it evaluated: not after the step was trained again
    (a resume from an earlier step, with other settings), nor while it is not trained again yet."""
    run = tmp_path / "run"
    train_here(dataset, run, "trainer.max_steps=4", "trainer.ckpt_every=2", "trainer.keep_last=0")
    saved = {r["step"]: r["checkpoint/weights"] for r in metrics(run) if "checkpoint/weights" in r}
    assert saved == {s: checkpoint_digest(run / "checkpoints" / f"step_{s:07d}") for s in (2, 4)}
    settings = EvalSettings(mode="chains", num_chains=1, ep_len=2, workers=0, progress=False, videos=0, video_failures=0)
    run_curve(run, settings, every=2)
    # trained again from step 0 to 2 with another learning rate, and its step 2 pruned (as keep_last=1 would)
    shutil.rmtree(run / "checkpoints")
    (run / "summary.json").unlink()
    train_here(dataset, run, "trainer.max_steps=2", "trainer.ckpt_every=2", "trainer.keep_last=0", "optim.lr=0.01")
    assert {r["step"] for r in metrics(run) if "checkpoint/weights" in r} == {2}
    shutil.rmtree(run / "checkpoints" / "step_0000002")
    capsys.readouterr()
    assert run_curve(run, settings, every=2) == []  # step 2's evaluation is of the old weights; step 4 is not trained
    err = capsys.readouterr().err
    assert "step_0000002: its checkpoint is gone (pruned) and the run's metrics.jsonl does not record the weights" in err
    assert "step_0000004: its checkpoint is gone (pruned) and the run's metrics.jsonl does not record" in err


def test_the_tools_take_several_values_one_after_another(tmp_path, monkeypatch):
    """README's convention for the tools: several values one after another, commas too. The curve's --tasks took
    one comma string and the doctor's --env-option one pair per flag: `--tasks a b` was an error; and the doctor
    read a value as YAML, where DOCTOR.md's `camera_sizes={static:128}` is a key `static:128`."""
    import harness.doctor.__main__ as doctor_cli
    import harness.train.curve as curve

    seen = {}
    monkeypatch.setattr(curve, "run_curve", lambda run, settings, *rest: seen.setdefault("tasks", settings.tasks) and [])
    (tmp_path / "checkpoints").mkdir()
    main([str(tmp_path), "--mode", "single_task", "--tasks", "open_drawer", "close_drawer,turn_on_led"])
    assert seen["tasks"] == ("open_drawer", "close_drawer", "turn_on_led")

    class Stop(Exception):
        pass

    def run_doctor(cfg):
        seen["options"] = cfg.env_options
        raise Stop

    monkeypatch.setattr(doctor_cli, "run_doctor", run_doctor)
    with pytest.raises(Stop):
        doctor_cli.main([str(tmp_path), "--env-option", "seed=1", "camera_sizes={static:128}", "--env-option", "x=2"])
    assert seen["options"] == {"seed": 1, "camera_sizes": {"static": 128}, "x": 2}
