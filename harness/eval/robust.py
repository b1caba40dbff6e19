"""The robustness suite: the unperturbed protocol and each perturbation axis and level on the same chains,
paired with the unperturbed run (docs/ROBUSTNESS.md).

    python -m harness.eval.robust agent=scripted num_chains=200 workers=2         (vla-harness-robust ...)
    python -m harness.eval.robust agent=vla agent.checkpoint=DIR suite.axes=[camera,language] suite.levels=[1,3]

The settings are the evaluation's (configs/robust.yaml builds on the same dataclasses; its defaults: 200
chains, no videos) plus `suite.axes` and `suite.levels`. Each row is an ordinary evaluation in a subfolder
of output_dir (`unperturbed/`, `camera_1/`, ...), with `env.perturb` set for it: each resumes like any
evaluation, so the same command again finishes what a killed suite left. Then output_dir gets
`robustness.md`, `robustness.csv` and `robustness.png`: avg. len with its 95 % interval per axis and level,
and the drop against the unperturbed run with the paired interval and exact test of `harness.eval.compare`.
"""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from harness.config_errors import ConfigError, config_errors, exit_on_config_error, resolve_config
from harness.envs.perturbations import AXES, LEVELS, Perturbations, level_name
from harness.eval.compare import Comparison, compare_runs, load_run
from harness.eval.config import EvalConfig, EvalSettings, store_eval_defaults
from harness.eval.evaluation import run_evaluation
from harness.eval.specs import AgentSource, EnvConfig
from harness.eval.stats import Interval
from harness.hydra_app import hydra_app, store_defaults
from harness.lifetime import sigterm_exits
from harness.strict_config import from_mapping, plain

UNPERTURBED = "unperturbed"


@dataclass(frozen=True)
class SuiteSettings:
    """suite.*: which axes and levels the suite runs (every row on the same chains)."""

    axes: tuple[str, ...] = tuple(AXES)
    levels: tuple[int, ...] = tuple(range(1, LEVELS + 1))

    def __post_init__(self) -> None:
        object.__setattr__(self, "axes", tuple(self.axes))
        object.__setattr__(self, "levels", tuple(self.levels))
        unknown = [a for a in self.axes if a not in AXES]
        if unknown:
            raise ValueError(f"suite.axes: unknown axes {unknown}; the axes are {list(AXES)}")
        bad = [level for level in self.levels if not 1 <= level <= LEVELS]
        if bad:
            raise ValueError(f"suite.levels: levels are 1..{LEVELS} (the unperturbed run is always made), got {bad}")

    def rows(self) -> list[tuple[str, int]]:
        return [(axis, level) for axis in self.axes for level in self.levels]


def row_folder(output_dir: Path, axis: str, level: int) -> Path:
    return output_dir / f"{axis}_{level}"


def run_suite(settings: EvalSettings, env: EnvConfig, agent: AgentSource, suite: SuiteSettings, output_dir: str | Path,
              config: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every row's evaluation (resuming what is there), then the table; returns its rows."""
    if env.perturb.any():
        raise ConfigError(f"env.perturb: the suite sets the perturbations of each row itself; got {env.perturb.active()}")
    for axis in suite.axes:  # a row the backend or the scene cannot run fails now, not after the others ran
        replace(env, perturb=Perturbations(**{axis: max(suite.levels)})).check()
    folder = Path(output_dir)
    rows = [(UNPERTURBED, 0), *suite.rows()]
    for axis, level in rows:
        perturb = Perturbations(**({axis: level} if level else {}))
        sub = folder / UNPERTURBED if not level else row_folder(folder, axis, level)
        print(f"[robust] {sub.name}: {perturb.describe() or 'unperturbed'}", flush=True)
        run_evaluation(settings, replace(env, perturb=perturb), agent, sub, config=_row_config(config, perturb),
                       print_summary=False)
    table = robustness_table(folder, suite)
    write_table(folder, table)
    return table


def _row_config(config: dict[str, Any] | None, perturb: Perturbations) -> dict[str, Any] | None:
    """The row's resolved config as its own evaluation would have it (env.perturb set, no suite)."""
    if config is None:
        return None
    row = {k: v for k, v in config.items() if k != "suite"}
    row["env"] = {**row["env"], "perturb": plain(perturb)}
    return row


def robustness_table(folder: Path, suite: SuiteSettings) -> list[dict[str, Any]]:
    """A row per axis and level: avg. len and its interval, and the paired drop against the unperturbed run."""
    base = load_run(folder / UNPERTURBED, "A")
    rows = [_row(UNPERTURBED, 0, base, None)]
    for axis, level in suite.rows():
        run = load_run(row_folder(folder, axis, level), "B")
        comparison = compare_runs(base, run, allow_mismatch=True)
        expected = ("env.perturb", "protocol.instructions") if axis == "language" else ("env.perturb",)
        other = [k for k, _, _ in comparison.mismatches if not k.startswith(expected)]
        if other:
            raise ValueError(f"{run.path} and {base.path} differ in more than the perturbation: {other}")
        rows.append(_row(axis, level, run, comparison))
    return rows


def _row(axis: str, level: int, run: Any, comparison: Comparison | None) -> dict[str, Any]:
    results = _results(run.path)
    interval = results["intervals"]["avg_seq_len"] or {"low": None, "high": None}
    row = {"axis": axis, "level": level, "amount": level_name(axis, level) if level else "",
           "chains": results["num_chains"], "avg_len": results["avg_seq_len"],
           "avg_len_low": interval["low"], "avg_len_high": interval["high"],
           "drop": None, "drop_low": None, "drop_high": None, "p": None, "paired": None}
    if comparison is not None:
        m = comparison.main  # B - A; the drop is A - B (+ 0.0: no "-0.00" where nothing changed)
        interval = m.interval or Interval(m.difference, m.difference)
        row.update(drop=-m.difference + 0.0, drop_low=-interval.high + 0.0, drop_high=-interval.low + 0.0,
                   paired=m.n, p=m.p_value)
    return row


def _results(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "results.json").read_text())


def _number(x: float | None, fmt: str = ".3f") -> str:
    return "-" if x is None else f"{x:{fmt}}"


def table_markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["# Robustness suite", "",
             "Avg. len with its 95 % interval (BCa bootstrap over chains); the drop is unperturbed minus perturbed "
             "over the paired chains, with its 95 % interval (BCa bootstrap of the paired differences) and the "
             "exact paired sign-flip test's p (harness.eval.compare; docs/EVALUATION.md, \"Comparing runs\").", "",
             "| axis | level | amount | chains | avg. len | 95 % CI | drop | 95 % CI | p |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ci = f"[{_number(r['avg_len_low'], '.2f')}, {_number(r['avg_len_high'], '.2f')}]"
        drop_ci = "" if r["drop"] is None else f"[{r['drop_low']:+.2f}, {r['drop_high']:+.2f}]"
        drop = "" if r["drop"] is None else f"{r['drop']:+.2f}"
        p = "" if r["p"] is None else f"{r['p']:.2g}"
        lines.append(f"| {r['axis']} | {r['level']} | {r['amount']} | {r['chains']} | {r['avg_len']:.3f} | {ci} | "
                     f"{drop} | {drop_ci} | {p} |")
    return "\n".join(lines) + "\n"


def write_table(folder: Path, rows: list[dict[str, Any]]) -> None:
    (folder / "robustness.md").write_text(table_markdown(rows))
    with open(folder / "robustness.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot_table(rows, folder / "robustness.png")
    print(table_markdown(rows) + f"\nwritten: {folder / 'robustness.md'}, robustness.csv, robustness.png", flush=True)


def plot_table(rows: list[dict[str, Any]], path: Path) -> None:
    """Avg. len against level per axis, with the intervals; level 0 is the unperturbed run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = rows[0]
    axes = list(dict.fromkeys(r["axis"] for r in rows[1:]))
    fig, ax = plt.subplots(figsize=(8, 4), dpi=120)
    for k, name in enumerate(axes):
        points = [base] + [r for r in rows if r["axis"] == name]
        x = [r["level"] + (k - (len(axes) - 1) / 2) * 0.04 for r in points]
        y = [r["avg_len"] for r in points]
        low = [r["avg_len"] - (r["avg_len_low"] if r["avg_len_low"] is not None else r["avg_len"]) for r in points]
        high = [(r["avg_len_high"] if r["avg_len_high"] is not None else r["avg_len"]) - r["avg_len"] for r in points]
        ax.errorbar(x, y, yerr=[low, high], marker="o", ms=4, capsize=3, label=name)
    ax.set(xlabel="level (0 = unperturbed)", ylabel="avg. len, 95 % CI", ylim=(-0.1, 5.15),
           title=f"robustness ({base['chains']} chains per row)")
    ax.set_xticks(range(0, LEVELS + 1))
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


@hydra_app("robust")
def _suite(cfg: DictConfig) -> None:
    sigterm_exits()
    with exit_on_config_error("harness.eval.robust"):
        resolved = resolve_config(cfg)
        with config_errors():
            suite = from_mapping(SuiteSettings, resolved.get("suite", {}), "suite")
            config = EvalConfig.from_dict({k: v for k, v in resolved.items() if k != "suite"})
        run_suite(config.settings, config.env, config.agent, suite, config.output_dir, config=resolved)


def main() -> None:
    store_eval_defaults()
    store_defaults("robust_suite", {"suite": plain(SuiteSettings())})
    _suite()


if __name__ == "__main__":
    sys.exit(main())
