"""A run's learning curve: the evaluation of its saved checkpoints against the training time they cost.

    python -m harness.train.curve runs/train/x --every 2000 --chains 100 --workers 2      # CALVIN's first 100 chains
    python -m harness.train.curve runs/train/x --mode single_task --tasks lift_red_block_table --episodes 10
    python -m harness.train.curve runs/train/x --follow ...    # beside a running training: each new checkpoint

Every checkpoint `step_K` with K a multiple of `--every`, and a finished run's last one, is evaluated by
`harness.eval` into `<run>/curve/<mode>/step_K/` (which resumes: the same command after a kill carries on), and
after each one `curve.csv`, `curve.md` and `curve.png` in `<run>/curve/<mode>/` list per checkpoint: the step, the epoch,
the training hours up to it, the validation loss, and the score (CALVIN's average sequence length, or the
mean single-task success over the tasks) with its 95 % interval (columns `_low`, `_high`, from
harness.eval.stats; error bars in the plot) and the per-position (chains) or per-task rates.

Training hours are the sum of the logged step times (`step_s` in metrics.jsonl: forward, backward,
optimizer and the wait for data; validation, checkpoints and rollouts excluded) over the steps up to K (a K
between two logged lines at the later line's mean step time), so a curve measured on a busy or a quiet
machine, resumed or not, is the time training itself took.
A run started from another run's weights (`init_from`, e.g. a curriculum's later stage) is charged for
them: the hours of the run(s) it started from, up to the checkpoint it took, are added (column
`warm_start_hours`; 0 where `init_from` is not a checkpoint of a run folder with its metrics.jsonl). So is a
run carried on in a new folder (`resume=<another run>/checkpoints/step_K`, e.g. given more steps while the
old folder's evaluations keep reading its own last checkpoint): the old run's hours up to step K, and its
own hours counted from step K on (where a run came from: its origin.json, harness.train.origin). Such a
run's curve is the whole run's: the checkpoints of the folders it was carried on from, up to the step it
carried on from, are evaluated with its own (column `run`: the folder each checkpoint was read from; every
evaluation is written under this run's `curve/`).
Keep the checkpoints (`trainer.keep_last=0`) to evaluate all of them afterwards (a checkpoint pruned after its
evaluation keeps its row in a rerun with the same settings, while the run's metrics.jsonl records those weights at
that step); `--follow` evaluates
each as it appears and stops once the run has written its summary, no trainer holds the run folder, and every
due checkpoint is done, or
(exit status 1) once the training stopped before its end: no process on this machine holds the run folder
(the trainer's lock, `.writer.lock`), so the curve runs on the machine of the training's rank 0.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

from agents.vla.layout import checkpoint_digest
from harness.eval.store import RUN_FILE, read_results
from harness.folder_lock import held
from harness.tool_args import several
from harness.train.origin import lineage, read_origin
from harness.train.run_checkpoints import step_name
from harness.train.metrics import CHECKPOINT_WEIGHTS, METRICS, read_metrics
from harness.train.tables import fmt, markdown_table, write_csv
from harness.train.trainer import SUMMARY

CURVE = "curve"
POLL_S = 60.0


def training_hours(records: list[dict[str, Any]], start: int = 0) -> dict[int, float]:
    """Cumulative training hours at `start` (0) and at each logged training step (`step_s`, the mean over the steps
    since the previous line, times their number), for a run whose first step is `start` + 1 (a run resumed from
    another run's checkpoint at step `start`)."""
    out, total, prev = {start: 0.0}, 0.0, start
    for r in sorted((r for r in records if "step_s" in r and r["step"] > start), key=lambda r: r["step"]):
        total += r["step_s"] * (r["step"] - prev)
        prev = r["step"]
        out[r["step"]] = total / 3600
    return out


def at_step(points: dict[int, float], step: int) -> float | None:
    """The value at `step` of a quantity logged at some steps that grows evenly between them (training hours: a
    line's `step_s` is the mean over the steps since the previous line; the epoch): exact at a logged step,
    interpolated between two (a checkpoint step that is no multiple of log_every), None outside them."""
    if step in points:
        return points[step]
    before = max((s for s in points if s < step), default=None)
    after = min((s for s in points if s > step), default=None)
    if before is None or after is None:
        return None
    return points[before] + (points[after] - points[before]) * (step - before) / (after - before)


def hours_up_to(hours: dict[int, float], step: int) -> float:
    """Training hours at `step` (`at_step`); for a step past the last logged line (a run killed after a checkpoint
    it saved between two lines), the hours at that line."""
    at = at_step(hours, step)
    return at if at is not None else max((h for s, h in hours.items() if s <= step), default=0.0)


def warm_start_hours(run: Path) -> float:
    """Training hours of the runs whose weights this run started from or carried on (harness.train.origin's
    lineage), each up to the checkpoint taken; 0 for a run that started from none."""
    total = 0.0
    for _, origin in lineage(run):
        if origin is not None:
            total += hours_up_to(_own_hours(origin.run), origin.step)
    return total


def first_step(run: Path) -> int:
    """The step a run's own training started after: the resumed checkpoint's step for a run carried on from
    another run's folder, else 0."""
    origin = read_origin(run)
    return origin.step if origin is not None and origin.resumed else 0


def _own_hours(run: Path) -> dict[int, float]:
    """The run folder's own training hours at each logged step (none where its metrics.jsonl is gone)."""
    return training_hours(read_metrics(run / METRICS), first_step(run)) if (run / METRICS).is_file() else {}


def _at(records: list[dict[str, Any]], step: int, key: str) -> Any:
    return next((r[key] for r in records if r["step"] == step and key in r), None)


class Checkpoint(NamedTuple):
    """A step checkpoint of a run and the run folder that wrote it."""

    step: int
    folder: Path
    run: Path


def due_checkpoints(run: Path, every: int) -> list[Checkpoint]:
    """The run's complete step checkpoints whose step is a multiple of `every`, and its last step once it has
    finished (a run of 58,000 steps curved every 4,000 ends on its final model), in step order, with those of
    the folders it was carried on from (resumed origins: the same run's earlier steps), each up to the step
    taken."""
    found: list[Checkpoint] = []
    upto: int | None = None
    final = _final_step(run)
    for folder, origin in lineage(run):
        for path in (folder / "checkpoints").glob("step_*"):
            step = int(path.name.removeprefix("step_"))
            due = step % every == 0 or (folder == run and step == final)
            if path.name == step_name(step) and due and (upto is None or step <= upto):
                found.append(Checkpoint(step, path, folder))
        if origin is None or not origin.resumed:
            break
        upto = origin.step
    return sorted(found)


def _final_step(run: Path) -> int | None:
    """The step a finished run ended at (its summary.json), None while it runs."""
    try:
        return int(json.loads((run / SUMMARY).read_text())["steps"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def evaluate_checkpoint(folder: Path, out: Path, settings: Any, scene: str) -> dict[str, Any]:
    """The checkpoint's evaluation in `out`, carried on where it stopped; one of an earlier model of that step (the
    run trained again from before it, with other settings) is discarded and run anew."""
    from harness.eval.evaluation import run_evaluation
    from harness.eval.specs import AgentConfig, EnvConfig

    agent = AgentConfig("vla", {"checkpoint": str(folder.resolve())})
    evaluated = _evaluated_weights(out)  # hashed only on a rerun: the run key hashes the checkpoint too
    if evaluated is not None and evaluated != checkpoint_digest(folder):
        print(f"{folder.name}: trained again since its evaluation (another checkpoint digest): evaluated anew",
              file=sys.stderr, flush=True)
        settings = replace(settings, overwrite=True)
    return run_evaluation(settings, EnvConfig(backend="builtin", scene=scene), agent, out, print_summary=False)


def _evaluated_weights(out: Path) -> str | None:
    """The digest of the checkpoint an evaluation folder's results are of (its run.json), None if unknown."""
    try:
        return json.loads((out / RUN_FILE).read_text()).get("weights")
    except (OSError, ValueError, AttributeError):
        return None


def curve_row(step: int, results: dict[str, Any], records: list[dict[str, Any]], hours: dict[int, float],
              warm_start: float = 0.0) -> dict[str, Any]:
    own = at_step(hours, step)
    epochs = {r["step"]: r["epoch"] for r in records if "epoch" in r}
    row = {"step": step, "epoch": at_step(epochs, step), "train_hours": own if own is None else own + warm_start,
           "warm_start_hours": warm_start, "val_loss": _at(records, step, "val/loss")}
    if results["mode"] == "chains":
        row["avg_seq_len"] = results["avg_seq_len"]
        row.update(_bounds("avg_seq_len", results["intervals"]["avg_seq_len"]))
        row.update({f"chain_sr_{k}": v for k, v in results["chain_sr"].items()})
    else:
        row["mean_task_success"] = results["mean_task_success_rate"]
        # the interval of the rate over all episodes: the mean over tasks with equally many episodes each
        row.update(_bounds("mean_task_success", results["intervals"]["success_rate"]))
        row.update({t: c["rate"] for t, c in results["tasks"].items()})
    return row


def _bounds(score: str, interval: dict[str, float] | None) -> dict[str, float | None]:
    """The score's 95 % interval (harness.eval.stats) as two columns."""
    return {f"{score}_low": interval and interval["low"], f"{score}_high": interval and interval["high"]}


def write_curve(folder: Path, rows: list[dict[str, Any]]) -> None:
    """curve.csv, curve.md and curve.png of the rows (one per evaluated checkpoint)."""
    columns = list(dict.fromkeys(k for r in rows for k in r))
    write_csv(folder / "curve.csv", columns, [[r.get(c) for c in columns] for r in rows])
    lines = markdown_table(columns, [[fmt(r.get(c)) for c in columns] for r in rows], align="---:")
    (folder / "curve.md").write_text("\n".join(lines) + "\n")
    _plot(folder / "curve.png", rows)


def _plot(path: Path, rows: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    score = "avg_seq_len" if "avg_seq_len" in rows[0] else "mean_task_success"
    timed = [r for r in rows if r["train_hours"] is not None]
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=120)
    low = [r[score] - r[f"{score}_low"] if r[f"{score}_low"] is not None else 0.0 for r in timed]
    high = [r[f"{score}_high"] - r[score] if r[f"{score}_high"] is not None else 0.0 for r in timed]
    ax.errorbar([r["train_hours"] for r in timed], [r[score] for r in timed], yerr=[low, high], fmt="o-",
                color="#3b7dd8", ecolor="#9bbbe8", capsize=2)
    for r in timed:
        ax.annotate(f"{r['step']}", (r["train_hours"], r[score]), fontsize=6, xytext=(2, 3), textcoords="offset points")
    untimed = f", {len(rows) - len(timed)} without training hours" if len(timed) < len(rows) else ""
    ax.set(xlabel="training hours", ylabel=score.replace("_", " "),
           title=f"learning curve ({len(timed)} checkpoints{untimed})", ylim=(0, 5 if score == "avg_seq_len" else 1))
    ax.title.set_fontsize(9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def run_curve(run: Path, settings: Any, every: int, scene: str = "D", follow: bool = False,
              poll_s: float = POLL_S) -> list[dict[str, Any]]:
    """Evaluate the due checkpoints (waiting for new ones with `follow`); returns the curve's rows. `follow` ends
    with the run's summary, or with TrainingStopped once no training holds the run folder two polls in a row."""
    folder = run / CURVE / settings.mode
    folder.mkdir(parents=True, exist_ok=True)
    listed = {c.step for c in due_checkpoints(run, every)}
    results: dict[int, tuple[Checkpoint, dict[str, Any]]] = pruned_evaluations(run, folder, settings, scene, every, listed)
    results_skipped: set[int] = set()
    idle_polls = 0
    while True:
        # the training first, then its summary: the trainer writes the summary before it lets go of the folder, so a
        # run seen without a trainer and then without a summary stopped before its end
        training = held(run)
        finished = (run / SUMMARY).is_file()
        # then the checkpoints: every one (the last one, due then, too) is written before the summary; one written
        # after a "not finished" is seen next round
        pending = [c for c in due_checkpoints(run, every) if c.step not in results and c.step not in results_skipped]
        for checkpoint in pending:
            if not checkpoint.folder.is_dir():  # pruned by the run (trainer.keep_last) since it was listed
                print(f"{step_name(checkpoint.step)}: gone before its turn (trainer.keep_last > 0 prunes checkpoints "
                      "the curve has not evaluated yet; keep_last=0 keeps them all)", file=sys.stderr, flush=True)
                results_skipped.add(checkpoint.step)
                continue
            evaluated = evaluate_checkpoint(checkpoint.folder, folder / step_name(checkpoint.step), settings, scene)
            results[checkpoint.step] = (checkpoint, evaluated)
            rows = _rows(run, results)
            write_curve(folder, rows)
            print(f"{step_name(checkpoint.step)}: " + ", ".join(f"{k} {v:.3g}" for k, v in rows[-1].items()
                                                   if k in ("train_hours", "avg_seq_len", "mean_task_success") and v is not None),
                  flush=True)
        # the end: the summary with no trainer holding the folder (a resumed trainer holds it while it sets its old
        # summary aside, so a summary seen then is not this run's end)
        if not follow or (finished and not training and not pending):
            break
        # a training that was started holds the folder from its first moment (before its checkpoints/ folder); one
        # poll without it may be a resumed trainer between its start and its lock, two are not. Only rounds that
        # then sleep count: a rerun's first rounds take up the evaluations it had done within seconds
        if training or finished or not (run / "checkpoints").is_dir():
            idle_polls = 0
        elif not pending:
            idle_polls += 1
        if idle_polls >= 2 and not pending:
            raise TrainingStopped(f"{run}: no training is running there and the run has not finished (no {SUMMARY}); "
                                  f"the curve has the {len(results)} checkpoint(s) evaluated so far; run the same "
                                  "command again beside the training when it carries on")
        if not pending:
            time.sleep(poll_s)
    return _rows(run, results)


NOT_THE_SETTINGS = ("agent", "weights", "checkpoint")  # run-key entries that name the checkpoint evaluated


def pruned_evaluations(run: Path, folder: Path, settings: Any, scene: str, every: int,
                       listed: set[int]) -> dict[int, tuple[Checkpoint, dict[str, Any]]]:
    """The finished evaluations in `folder` of due steps whose checkpoints the run has pruned since
    (trainer.keep_last > 0; `listed`: the due steps still there), when they are of these settings and units (a
    rerun with other ones cannot evaluate the checkpoint again: its row is left out, saying so) and of the weights
    the run's metrics.jsonl records for the step (one of a step trained again since, or not yet again, is left out
    too). A rerun of the curve dropped their rows."""
    from harness.eval.specs import AgentConfig, EnvConfig

    final = _final_step(run)
    want = _settings_key(settings.run_key(EnvConfig(backend="builtin", scene=scene), AgentConfig("vla", {})))
    jobs = {job.key for job in settings.jobs()}
    kept: dict[int, tuple[Checkpoint, dict[str, Any]]] = {}
    for out in sorted(folder.glob("step_*")):
        step = int(out.name.removeprefix("step_")) if out.name.removeprefix("step_").isdigit() else None
        if step is None or step in listed or (step % every and step != final):
            continue
        try:
            key, evaluated = json.loads((out / RUN_FILE).read_text()), json.loads((out / "results.json").read_text())
        except (OSError, ValueError):
            continue  # never finished: nothing to show, nothing to evaluate it with
        if _settings_key(key) != want or _units(evaluated) != len(jobs) or not jobs <= set(read_results(out)):
            print(f"{out.name}: its checkpoint is gone (pruned) and its evaluation has other settings or units than "
                  "this curve's: left out", file=sys.stderr, flush=True)
            continue
        trained_in = _folder_of(run, step)
        if key.get("weights") is None or key.get("weights") != _saved_weights(trained_in, step):
            print(f"{out.name}: its checkpoint is gone (pruned) and the run's metrics.jsonl does not record the weights "
                  "it evaluated at that step (trained again since, or by a trainer that did not record them): left out",
                  file=sys.stderr, flush=True)
            continue
        checkpoint = Path(key["agent"]["kwargs"]["checkpoint"])
        kept[step] = (Checkpoint(step, checkpoint, trained_in), evaluated)
    return kept


def _saved_weights(run: Path, step: int) -> str | None:
    """The digest of the checkpoint the run saved at `step`, as its metrics.jsonl records it (the trajectory the
    run's checkpoints belong to: a step trained again has the newer digest, one not trained again none)."""
    records = read_metrics(run / METRICS) if (run / METRICS).is_file() else []
    return next((r[CHECKPOINT_WEIGHTS] for r in reversed(records) if r["step"] == step and CHECKPOINT_WEIGHTS in r), None)


def _folder_of(run: Path, step: int) -> Path:
    """The folder of the run's lineage that trained `step` (where its metrics are): the newest one that has it,
    each carried on from an earlier one after the step it was carried from (as due_checkpoints lists them)."""
    for folder, origin in lineage(run):
        if origin is None or not origin.resumed or step > origin.step:
            return folder
    return run


def _settings_key(key: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in key.items() if k not in NOT_THE_SETTINGS}


def _units(evaluated: dict[str, Any]) -> int:
    """How many chains or episodes an evaluation's results.json reports."""
    if evaluated.get("mode") == "chains":
        return int(evaluated.get("num_chains") or 0)
    return sum(int(t.get("total", 0)) for t in (evaluated.get("tasks") or {}).values())


class TrainingStopped(RuntimeError):
    """`--follow`: the training stopped before its end (killed, crashed), so no new checkpoint will come."""


def _rows(newest: Path, results: dict[int, tuple[Checkpoint, dict[str, Any]]]) -> list[dict[str, Any]]:
    """The curve's rows, each from the metrics of the run folder its checkpoint came from (column `run`: that
    folder, relative to the folder holding the curve's run `newest`)."""
    rows = []
    for step in sorted(results):
        checkpoint, evaluated = results[step]
        run = checkpoint.run
        records = read_metrics(run / METRICS) if (run / METRICS).is_file() else []
        row = curve_row(step, evaluated, records, training_hours(records, first_step(run)), warm_start_hours(run))
        rows.append({**row, "run": os.path.relpath(run.resolve(), newest.resolve().parent)})
    return rows


def main(argv: list[str] | None = None) -> None:
    from harness.eval.config import EvalSettings
    from harness.eval.specs import EnvConfig

    ap = argparse.ArgumentParser(prog="python -m harness.train.curve", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="a training run folder (with checkpoints/ and metrics.jsonl)")
    ap.add_argument("--every", type=int, default=1000, help="evaluate the checkpoints whose step is a multiple of this")
    ap.add_argument("--mode", choices=("chains", "single_task"), default="chains")
    ap.add_argument("--chains", type=int, default=100, help="chains: CALVIN's first N chains")
    ap.add_argument("--tasks", nargs="+", help="single_task: the tasks, one after another or commas (default: all 34)")
    ap.add_argument("--episodes", type=int, default=10, help="single_task: episodes per task")
    ap.add_argument("--scene", default=EnvConfig.scene, help="the evaluation's env.scene (default: %(default)s)")
    ap.add_argument("--workers", type=int, default=2, help="evaluation worker processes")
    ap.add_argument("--follow", action="store_true", help="wait for new checkpoints until the run has finished")
    args = ap.parse_args(argv)
    if not (args.run / "checkpoints").is_dir() and not args.follow:
        ap.error(f"{args.run}: no checkpoints/ folder (is it a training run folder?)")
    if args.every < 1:
        ap.error(f"--every must be >= 1, got {args.every}")
    settings = EvalSettings(mode=args.mode, num_chains=args.chains, episodes_per_task=args.episodes,
                            tasks=several(args.tasks), workers=args.workers,
                            progress=False, videos=0, video_failures=0)
    try:
        rows = run_curve(args.run, settings, args.every, args.scene, args.follow)
    except TrainingStopped as e:
        sys.exit(f"python -m harness.train.curve: {e}")
    if not rows:
        print(f"{args.run}: no checkpoint with a step that is a multiple of {args.every}")


if __name__ == "__main__":
    main()
