"""A sweep's table: each run's swept settings, final validation loss and rollout score, the best run named.

    python -m harness.train.sweep runs/sweep/<name>        # writes sweep.csv and sweep.md there

A hydra multirun of `harness.train` writes it by itself when the last job ends (`SweepTableCallback`,
configured in configs/train.yaml). Runs are the folders below the sweep folder with a summary.json; a run
that has none (failed, or still running) is listed with its status. The best run has the lowest final
validation loss, or, when the runs ranked checkpoints by rollouts, the highest rollout score of its best
checkpoint (the one `checkpoints/best` keeps; `best_rollout`). Rollout scores come with their 95 % intervals
(logged by the rollout callback); runs whose best checkpoint's interval overlaps the best run's are named,
because a few rollout episodes rarely separate close runs (the table's columns show each run's last rollout).
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from harness.durable_files import atomic_write_text
from harness.train.tables import fmt, interval_text, markdown_table, write_csv

CSV, MARKDOWN = "sweep.csv", "sweep.md"


def _overrides(run: Path, summary: dict[str, Any] | None) -> list[str]:
    """The run's overrides: its summary's, the config.yaml its training wrote, or else hydra's record (which a
    refused launch in the same folder overwrites)."""
    if summary is not None:
        return list(summary.get("overrides") or [])
    recorded = _recorded_overrides(run)
    if recorded is not None:
        return recorded
    path = run / ".hydra" / "overrides.yaml"
    if path.is_file():
        import yaml

        return list(yaml.safe_load(path.read_text()) or [])
    return []


def collect(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """One row per run folder (those with a summary.json or a .hydra folder), in job order."""
    rows = []
    folders = [p for p in Path(sweep_dir).iterdir() if p.is_dir() and ((p / "summary.json").is_file() or (p / ".hydra").is_dir())]
    for run in sorted(folders, key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name)):
        summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").is_file() else None
        rollout = (summary or {}).get("rollout") or {}
        rows.append({
            "run": run.name,
            "overrides": dict(o.split("=", 1) for o in _overrides(run, summary) if "=" in o),
            "status": "done" if summary is not None else "no summary (failed or running)",
            "steps": summary["steps"] if summary else None,
            "val_loss": summary.get("val_loss") if summary else None,
            "rollout_score": rollout.get("rollout/score"),
            "rollout_score_ci_low": rollout.get("rollout/score_ci_low"),
            "rollout_score_ci_high": rollout.get("rollout/score_ci_high"),
            "best_metric": (summary.get("best") or {}).get("metric") if summary else None,
            "best_value": (summary.get("best") or {}).get("value") if summary else None,
            "best_ci_low": (summary.get("best") or {}).get("ci_low") if summary else None,
            "best_ci_high": (summary.get("best") or {}).get("ci_high") if summary else None,
            "samples_per_s": summary.get("samples_per_s") if summary else None,
        })
    return rows


def best_run(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Highest rollout score if the runs were ranked by rollouts, else highest VQA accuracy if by that (a sweep of
    vision-language runs has no validation loss), else lowest validation loss."""
    def usable(v: Any) -> bool:
        return v is not None and math.isfinite(v)

    by_rollout = [r for r in rows if r["best_metric"] == "rollout_success" and usable(best_rollout(r)[0])]
    if by_rollout:
        return max(by_rollout, key=lambda r: best_rollout(r)[0])
    by_vqa = [r for r in rows if r["best_metric"] == "vqa_accuracy" and usable(r["best_value"])]
    if by_vqa:
        return max(by_vqa, key=lambda r: r["best_value"])
    by_loss = [r for r in rows if usable(r["val_loss"])]
    return min(by_loss, key=lambda r: r["val_loss"]) if by_loss else None


def best_rollout(row: dict[str, Any]) -> tuple[Any, Any, Any]:
    """(score, low, high) of the run's best checkpoint by rollouts (the one `checkpoints/best` keeps; no interval
    in a summary written before the best kept it); its last rollout's for a run without a best."""
    if row.get("best_value") is not None:
        return row["best_value"], row.get("best_ci_low"), row.get("best_ci_high")
    return row["rollout_score"], row["rollout_score_ci_low"], row["rollout_score_ci_high"]


def _score_text(row: dict[str, Any]) -> str:
    """'3.1 [2.9, 3.3]': the last rollout's score and its interval (runs logged before intervals: the score alone)."""
    return interval_text(row["rollout_score"], row["rollout_score_ci_low"], row["rollout_score_ci_high"])


def not_separated(rows: list[dict[str, Any]], best: dict[str, Any]) -> list[dict[str, Any]]:
    """The other runs whose best checkpoint's rollout-score interval overlaps the best run's."""
    _, low, high = best_rollout(best)
    if low is None:
        return []
    return [r for r in rows if r is not best and best_rollout(r)[2] is not None and best_rollout(r)[2] >= low
            and best_rollout(r)[1] <= high]


def swept_keys(rows: list[dict[str, Any]]) -> list[str]:
    """The override keys whose values differ between the runs (the sweep's axes), in first-seen order."""
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r["overrides"] if k not in keys]
    return [k for k in keys if len({r["overrides"].get(k) for r in rows}) > 1]


def write_sweep_table(sweep_dir: str | Path) -> Path:
    """Write sweep.csv and sweep.md in `sweep_dir`; returns the Markdown file."""
    sweep_dir = Path(sweep_dir)
    rows = collect(sweep_dir)
    best = best_run(rows)
    axes = swept_keys(rows)
    metrics = ["status", "steps", "val_loss", "rollout_score", "samples_per_s"]
    csv_metrics = ["status", "steps", "val_loss", "rollout_score", "rollout_score_ci_low", "rollout_score_ci_high", "samples_per_s"]
    write_csv(sweep_dir / CSV, ["run", *axes, *csv_metrics, "best"],
              [[r["run"], *(r["overrides"].get(k, "") for k in axes), *(r[c] for c in csv_metrics), r is best] for r in rows])
    lines = [f"# Sweep {sweep_dir}", ""]
    if best is not None:
        by_rollout = best["best_metric"] == "rollout_success" and best_rollout(best)[0] is not None
        if by_rollout:
            value = f"rollout score {interval_text(*best_rollout(best))}"
        elif best["best_metric"] == "vqa_accuracy":
            value = f"VQA accuracy {fmt(best['best_value'])}"
        else:
            value = f"val loss {fmt(best['val_loss'])}"
        setting = " ".join(f"{k}={best['overrides'].get(k, '-')}" for k in axes)
        lines += [f"Best run: **{best['run']}** (`{setting}`), {value}", ""]
        close = not_separated(rows, best) if by_rollout else []
        if close:
            lines += [f"Not separated from it by the rollouts (95 % intervals overlap): {', '.join(r['run'] for r in close)}. "
                      "Evaluate the checkpoints on more chains and `python -m harness.eval compare` them.", ""]
    else:
        lines += ["Best run: none (no run finished with a validation loss)", ""]
    table = []
    for r in rows:
        cells = [r["run"], *(r["overrides"].get(k, "-") for k in axes),
                 *(_score_text(r) if c == "rollout_score" else fmt(r[c]) for c in metrics)]
        if r is best:
            cells[0] = f"**{cells[0]}**"
        table.append(cells)
    lines += markdown_table(["run", *axes, *metrics], table)
    path = sweep_dir / MARKDOWN
    path.write_text("\n".join(lines) + "\n")
    return path


# what a job may be given when the same multirun is launched again to carry its runs on (docs/TRAINING.md, "Resume":
# more steps, a decay at the end, a CPU budget), unless a grid sweeps it
CARRY_ON = ("trainer.max_steps", "optim.schedule", "optim.decay_steps", "trainer.max_cpu_s")
# where and how a run is trained, not what (a sweep carried on on another machine, with its data moved), unless a
# grid sweeps it
OPERATIONAL = ("data.path", "trainer.device", "trainer.num_workers", "trainer.progress", "trainer.dist_timeout_s")
MULTIRUN = "multirun.yaml"  # hydra's record of a multirun, written in the sweep folder before its first job
JOB_RECORD = "sweep_job.json"  # in a job's folder: the settings the launch that ran it swept


def check_job_folder(run: Path, overrides: list[str], record: bool = True) -> None:
    """A multirun job resumes in its folder (`<sweep dir>/<job number>`), so the same command again carries the
    sweep on; a launch with another grid numbers other settings alike, and its job would resume (or, finished,
    report) the old grid's run. ValueError when the folder's run was trained with other settings than this job's,
    beyond the OPERATIONAL and CARRY_ON settings that neither this launch nor the one that ran the folder swept
    (values compared as hydra parses them: `1e-3` is `0.001`, `'x'` is `x`). Then, with `record` (rank 0),
    the settings this launch sweeps are written to the folder's JOB_RECORD."""
    swept_now = _swept_now(run.parent)
    old = _recorded_overrides(run)
    if old is not None:
        swept = swept_now | _recorded_swept(run)
        free = {k for k in (*OPERATIONAL, *CARRY_ON) if k not in swept}
        old_settings, new_settings = _settings(old), _settings(overrides)
        differ = sorted(k for k in set(old_settings) | set(new_settings)
                        if old_settings.get(k) != new_settings.get(k) and k not in free)
        if differ:
            was = " ".join(f"{k}={old_settings.get(k, '(unset)')}" for k in differ)
            now = " ".join(f"{k}={new_settings.get(k, '(unset)')}" for k in differ)
            raise ValueError(f"{run} holds job {run.name} of another sweep ({was}), not this one's ({now}): give this "
                             "sweep another run_name (or hydra.sweep.dir), or remove the old one")
    if record:
        run.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run / JOB_RECORD, json.dumps({"swept": sorted(swept_now)}) + "\n")


def _recorded_overrides(run: Path) -> list[str] | None:
    """The command-line overrides a run folder's training recorded (its config.yaml), None without one."""
    import yaml

    path = run / "config.yaml"
    if not path.is_file():
        return None
    return list((yaml.safe_load(path.read_text()) or {}).get("overrides") or [])


def _recorded_swept(run: Path) -> set[str]:
    """The settings the launch that ran the folder swept (none known for a folder from before JOB_RECORD)."""
    try:
        return set(json.loads((run / JOB_RECORD).read_text())["swept"])
    except (OSError, ValueError, KeyError, TypeError):
        return set()


def _swept_now(sweep_dir: Path) -> set[str]:
    """The settings this multirun sweeps (hydra's multirun.yaml, unresolved): its command line's lists (`key=a,b`)
    and its config's sweeper params."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    path = sweep_dir / MULTIRUN
    if not path.is_file():
        return set()
    try:
        hydra = OmegaConf.to_container(OmegaConf.load(path).hydra, resolve=False)
        task = [str(o) for o in hydra.get("overrides", {}).get("task") or []]
        params = [f"{k}={v}" for k, v in (hydra.get("sweeper", {}).get("params") or {}).items()]
        parsed = OverridesParser.create().parse_overrides([*task, *params])
    except Exception as e:  # noqa: BLE001 - hydra's own file, unreadable: say which
        raise ValueError(f"{path}: cannot read the settings this multirun sweeps ({e})") from e
    return {o.key_or_group for o in parsed if o.is_sweep_override()}


def _settings(overrides: list[str]) -> dict[str, Any]:
    """key -> value of hydra override strings, parsed as hydra does (`+key=v`, `++key=v` and `key=v` alike; `~key`:
    deleted)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    return {o.key_or_group: ("(deleted)" if o.is_delete() else o.value()) for o in parsed}


class SweepTableCallback(Callback):
    """Hydra callback: the sweep table when a multirun ends."""

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if sweep_dir.is_dir() and int(os.environ.get("RANK", "0")) == 0:  # under torchrun: rank 0 writes
            print(f"sweep table: {write_sweep_table(sweep_dir)}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Collect a training multirun's results into sweep.csv and sweep.md")
    parser.add_argument("sweep_dir", type=Path)
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        parser.error(f"{args.sweep_dir} is not a folder")
    path = write_sweep_table(args.sweep_dir)
    print(path.read_text(), end="")


if __name__ == "__main__":
    main()
