"""Paired comparison of evaluation runs: is B better than A, by how much, and how sure is that?

    python -m harness.eval compare RUN_A RUN_B [RUN_C ...] [--out DIR] [--chains-needed [--detect 0.1]]
    python -m harness.eval.compare ...                       # the same

RUN_X are evaluation output folders (results.jsonl and run.json; results.json when the run finished). Every
later run is compared with the first. The chains a pair of runs share (same key, e.g. "chain/17", with the
same tasks and start state) are paired: each chain's length in B minus its length in A. From those:

  * the difference in avg. len, with a BCa bootstrap interval over the paired chains and the exact p-value
    of the paired sign-flip test (harness.eval.stats), and for each "i in a row" rate (yes/no per chain)
    Newcombe's paired score interval and the exact McNemar test;
  * per-task differences in success rate with Newcombe's interval (a task's attempts differ between runs,
    because a chain stops at its first failure, so these are not paired);
  * one verdict line: "B (x) is better than A (y) by 0.21 avg. len, 95 % CI 0.12 to 0.30 (p = 0.0004, ...)"
    when the exact test rejects "no difference" at the 5 % level, otherwise "no significant difference";
  * with --chains-needed: how many paired chains would resolve a given difference (--detect, default: the
    observed one) at 95 % confidence with 80 % power, from the per-chain spread of the differences.

Runs evaluated under different protocols (backend, scene, renderer, ep_len, env options, simulator version,
instructions, mode, ...: everything run.json and results.json record except what identifies the agent, the
seed and `setup`: NOT_PROTOCOL) are
refused, naming each setting and both values; --allow-protocol-mismatch compares them anyway and says so.
Single-task runs are compared the same way, episode by episode, on the success rate (Newcombe's paired
interval).

Writes compare.md, compare.json and compare.png to --out (default runs/compare/<A>-vs-<B>...) and prints
the Markdown.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from harness.eval.results import CHAIN_LENGTH, task_info
from harness.eval.stats import (BOOTSTRAP_SEED, LEVEL, POWER, RESAMPLES, Interval, PairedDifference, newcombe, paired,
                                units_needed, z_value)
from harness.eval.store import RESULTS, RUN_FILE, read_results

BENCHMARK_CHAINS = 1000  # CALVIN's list: no more chains to pair exist
# run.json keys that are what is compared (the agent, the folder a checkpoint link named, the checkpoint's digest, the
# dtype a VLA's `dtype: auto` became: the agent's own numerics), only RNG draws (seed), or how single-task image noise was
# drawn ("setup": recorded only where it changed, so a clean run would differ from a noisy one by it)
NOT_PROTOCOL = {"agent", "checkpoint", "weights", "precision", "seed", "setup"}
RESULTS_PROTOCOL_SKIP = {"chains", "episodes_per_task", "seed", "mode", "ep_len"}  # how many / already in run.json


class CompareError(ValueError):
    """Runs that cannot be compared (missing files, no shared chains, another protocol)."""


@dataclass
class Run:
    label: str  # "A", "B", ... in the order given
    path: Path
    agent: str
    mode: str
    seed: Any
    records: dict[str, dict[str, Any]]
    protocol: dict[str, Any]  # flattened settings that must match between compared runs

    @property
    def title(self) -> str:
        return f"{self.label} ({self.path.name})"


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _agent_name(key: dict[str, Any], results: dict[str, Any] | None) -> str:
    if results is not None:
        agent = results["agent"]
        return agent["name"] + (f" ({agent['checkpoint']})" if agent.get("checkpoint") else "")
    agent = key.get("agent", {})
    return agent.get("name") or agent.get("factory") or "?"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise CompareError(f"{path}: not valid JSON ({e})") from e


def load_run(path: str | Path, label: str) -> Run:
    """An evaluation output folder: its records, and the protocol from run.json (+ results.json if finished)."""
    folder = Path(path)
    if not folder.is_dir():
        raise CompareError(f"{folder}: no such folder (expected an evaluation output folder)")
    if not (folder / RUN_FILE).is_file():
        raise CompareError(f"{folder}: no {RUN_FILE} (not an evaluation output folder, or from before run.json existed)")
    key = _read_json(folder / RUN_FILE)
    results = _read_json(folder / "results.json") if (folder / "results.json").is_file() else None
    records = read_results(folder)
    if not records:
        raise CompareError(f"{folder}: no finished chains in {RESULTS}")
    protocol = _flatten({k: v for k, v in key.items() if k not in NOT_PROTOCOL})
    if results is not None:
        protocol["env.version"] = results["env"].get("version", "")
        protocol.update({f"protocol.{k}": v for k, v in _flatten(results.get("protocol", {})).items()
                         if k not in RESULTS_PROTOCOL_SKIP})
    return Run(label, folder, _agent_name(key, results), key.get("mode", "chains"), key.get("seed"), records, protocol)


def protocol_differences(a: Run, b: Run, shared: Sequence[str]) -> list[tuple[str, Any, Any]]:
    """(setting, value in A, value in B) for every setting that differs, and for shared chains whose tasks
    or start state differ (another chain list)."""
    diffs = [(k, a.protocol.get(k), b.protocol.get(k)) for k in sorted(set(a.protocol) | set(b.protocol))
             if a.protocol.get(k) != b.protocol.get(k) and (k in a.protocol and k in b.protocol or not _from_results(k))]
    for k in shared:
        for field in ("tasks", "condition", "setup"):
            if a.records[k].get(field) != b.records[k].get(field):
                diffs.append((f"{k} {field}", a.records[k].get(field), b.records[k].get(field)))
    return diffs


def _from_results(setting: str) -> bool:
    """A setting read from results.json, which only a finished run has: compared where both runs have it (an
    unfinished run is compared by its run.json)."""
    return setting == "env.version" or setting.startswith("protocol.")


def unit_of(mode: str) -> str:
    """What a run's records are: chains, or single-task episodes."""
    return "chains" if mode == "chains" else "episodes"


def shared_keys(a: Run, b: Run) -> list[str]:
    """The units both runs finished, in A's order."""
    return sorted(set(a.records) & set(b.records), key=lambda k: int(a.records[k]["index"]))


@dataclass
class Comparison:
    a: Run
    b: Run
    keys: list[str]
    main: PairedDifference  # avg. len (chains) or success rate (single_task)
    in_a_row: dict[str, PairedDifference]  # chains: "1".."5"
    tasks: dict[str, dict[str, Any]]  # task -> {"a": {success, total}, "b": {...}, "difference", "interval"}
    mismatches: list[tuple[str, Any, Any]]

    @property
    def unit(self) -> str:
        return unit_of(self.a.mode)

    def to_dict(self) -> dict[str, Any]:
        return {"a": str(self.a.path), "b": str(self.b.path), "paired": len(self.keys), "unit": self.unit,
                "difference": self.main.to_dict(), "in_a_row": {k: v.to_dict() for k, v in self.in_a_row.items()},
                "tasks": self.tasks, "protocol_mismatches": [{"setting": k, "a": x, "b": y} for k, x, y in self.mismatches]}


def compare_runs(a: Run, b: Run, allow_mismatch: bool = False, resamples: int = RESAMPLES,
                 seed: int = BOOTSTRAP_SEED) -> Comparison:
    keys = shared_keys(a, b)
    mismatches = protocol_differences(a, b, keys)
    if mismatches and not allow_mismatch:
        lines = "\n".join(f"  {k}: {x!r} ({a.label}) vs {y!r} ({b.label})" for k, x, y in mismatches)
        raise CompareError(f"{b.title} and {a.title} were evaluated under different protocols:\n{lines}\n"
                           "Their numbers measure different things; --allow-protocol-mismatch compares them anyway.")
    if not keys:
        raise CompareError(f"{b.title} and {a.title} share no {unit_of(a.mode)} "
                           f"({a.label}: {len(a.records)}, {b.label}: {len(b.records)})")
    done_a = np.array([int(a.records[k]["completed"]) for k in keys])
    done_b = np.array([int(b.records[k]["completed"]) for k in keys])
    in_a_row = {}
    if a.mode == "chains":
        in_a_row = {str(i): paired(done_a >= i, done_b >= i, resamples=resamples, seed=seed) for i in range(1, CHAIN_LENGTH + 1)}
    info_a = task_info(a.records[k] for k in keys)
    info_b = task_info(b.records[k] for k in keys)
    tasks = {}
    for t in list(info_a) + [t for t in info_b if t not in info_a]:
        ca, cb = info_a.get(t, {"success": 0, "total": 0}), info_b.get(t, {"success": 0, "total": 0})
        interval = newcombe(ca["success"], ca["total"], cb["success"], cb["total"])
        difference = cb["success"] / cb["total"] - ca["success"] / ca["total"] if ca["total"] and cb["total"] else None
        tasks[t] = {"a": ca, "b": cb, "difference": difference, "interval": interval.to_dict() if interval else None}
    most = CHAIN_LENGTH if a.mode == "chains" else 1
    return Comparison(a, b, keys, paired(done_a, done_b, resamples=resamples, seed=seed, most=most), in_a_row, tasks,
                      mismatches)


def _amount(c: Comparison, x: float, signed: bool = False) -> str:
    """A difference in the comparison's unit: '0.21' avg. len, or '12.0' percentage points of success."""
    sign = "+" if signed else ""
    return f"{x:{sign}.2f}" if c.unit == "chains" else f"{x * 100:{sign}.1f}"


def _what(c: Comparison) -> str:
    return "avg. len" if c.unit == "chains" else "percentage points of success rate"


def verdict(c: Comparison) -> str:
    """One line: B better / worse than A by how much (with the interval), or no significant difference."""
    m, level = c.main, f"{c.main.level * 100:g} %"
    ci = m.interval or Interval(m.difference, m.difference)
    tail = f"(p = {m.p_value:.2g}, exact paired sign-flip test; {m.n} paired {c.unit})"
    if m.significant():
        better = m.difference > 0
        low, high = (ci.low, ci.high) if better else (-ci.high, -ci.low)
        line = (f"{c.b.title} is {'better' if better else 'worse'} than {c.a.title} by {_amount(c, abs(m.difference))} "
                f"{_what(c)}, {level} CI {_amount(c, low)} to {_amount(c, high)} {tail}")
        if low <= 0:
            line += "; the interval reaches 0: borderline"
    else:
        line = (f"No significant difference between {c.b.title} and {c.a.title}: {c.b.label} - {c.a.label} = "
                f"{_amount(c, m.difference, True)} {_what(c)}, {level} CI {_amount(c, ci.low, True)} to "
                f"{_amount(c, ci.high, True)} {tail}")
        if ci.low > 0 or ci.high < 0:
            line += "; the interval excludes 0: borderline"
    return line + ("; PROTOCOLS DIFFER (--allow-protocol-mismatch)" if c.mismatches else "")


def chains_needed(c: Comparison, detect: float | None) -> list[str]:
    """How many paired units would resolve a difference, from this pair's per-unit spread (normal approximation)."""
    delta = detect if detect is not None else c.main.difference
    if not delta:
        return [f"{c.unit.capitalize()} needed ({c.b.label} vs {c.a.label}): no difference observed; pass --detect to name one."]
    shown = f"{_amount(c, abs(delta))} {_what(c)}"
    n = units_needed(c.main.sd, delta)
    if n is None:
        return [f"{c.unit.capitalize()} needed ({c.b.label} vs {c.a.label}): the runs never differ on a shared {c.unit[:-1]}; "
                "no spread to base an estimate on."]
    source = "given" if detect is not None else "observed"
    line = (f"{c.unit.capitalize()} needed ({c.b.label} vs {c.a.label}): to detect a difference of {shown} ({source}) at "
            f"{LEVEL * 100:g} % confidence with {POWER * 100:g} % power: {n} paired {c.unit} "
            f"(per-{c.unit[:-1]} SD of the difference {c.main.sd:.3f}, from {c.main.n} paired {c.unit})")
    if c.unit == "chains" and n > BENCHMARK_CHAINS:
        line += f"; more than CALVIN's {BENCHMARK_CHAINS} chains: one run each cannot resolve it"
    out = [line + "."]
    done_a = np.array([int(c.a.records[k]["completed"]) for k in c.keys])
    sd_a = float(done_a.std(ddof=1)) if done_a.size > 1 else 0.0
    if sd_a > 0:
        single = int(np.ceil((z_value(LEVEL) * sd_a / abs(delta)) ** 2))
        metric = "avg. len" if c.unit == "chains" else "success rate (points)"
        out.append(f"One run's {metric} to +-{_amount(c, abs(delta))} ({LEVEL * 100:g} % CI half-width): about "
                   f"{single} {c.unit} (per-{c.unit[:-1]} SD {sd_a:.3f} in {c.a.label}).")
    return out


def _ci(interval: Interval | dict[str, float] | None, c: Comparison) -> str:
    if interval is None:
        return "-"
    i = interval if isinstance(interval, Interval) else Interval.from_dict(interval)
    return f"[{_amount(c, i.low, True)}, {_amount(c, i.high, True)}]"


def _rate(counts: dict[str, int]) -> str:
    return f"{counts['success']}/{counts['total']} ({counts['success'] / counts['total'] * 100:.1f}%)" if counts["total"] else "-"


def comparison_markdown(c: Comparison) -> list[str]:
    m, unit = c.main, c.unit
    main_name = "avg. len" if unit == "chains" else "success rate"
    value = (lambda x: f"{x:.3f}") if unit == "chains" else (lambda x: f"{x * 100:.1f}%")
    diff_unit = "" if unit == "chains" else " (points)"
    lines = [f"## {c.b.title} vs {c.a.title}: {m.n} paired {unit}", "", f"**{verdict(c)}**", ""]
    if c.mismatches:
        lines += ["Protocol differences (compared anyway):", ""]
        lines += [f"- `{k}`: {x!r} ({c.a.label}) vs {y!r} ({c.b.label})" for k, x, y in c.mismatches] + [""]
    lines += [f"| | {c.a.label} | {c.b.label} | {c.b.label} - {c.a.label}{diff_unit} | {m.level * 100:g} % CI | p |",
              "|---|---:|---:|---:|---:|---:|",
              f"| {main_name} | {value(m.mean_a)} | {value(m.mean_b)} | {_amount(c, m.difference, True)} | {_ci(m.interval, c)} | {m.p_value:.2g} |"]
    for i, d in c.in_a_row.items():
        lines.append(f"| {i} in a row | {d.mean_a * 100:.1f}% | {d.mean_b * 100:.1f}% | {d.difference * 100:+.1f} pts | "
                     f"[{d.interval.low * 100:+.1f}, {d.interval.high * 100:+.1f}] | {d.p_value:.2g} |")
    lines += ["", f"Per task (success / attempts over the paired {unit}; Newcombe interval of the difference in "
              "points, not paired and not corrected for the number of tasks):", "",
              f"| task | {c.a.label} | {c.b.label} | {c.b.label} - {c.a.label} | {m.level * 100:g} % CI |", "|---|---:|---:|---:|---:|"]
    for t, d in c.tasks.items():
        diff = f"{d['difference'] * 100:+.1f}" if d["difference"] is not None else "-"
        ci = f"[{d['interval']['low'] * 100:+.1f}, {d['interval']['high'] * 100:+.1f}]" if d["interval"] else "-"
        lines.append(f"| {t} | {_rate(d['a'])} | {_rate(d['b'])} | {diff} | {ci} |")
    return lines + [""]


def report_markdown(runs: Sequence[Run], comparisons: Sequence[Comparison], needed: Sequence[str]) -> str:
    lines = ["# Comparison of evaluation runs", ""]
    if len(runs) > 2:
        lines += [f"Each run is compared with the first, {runs[0].title}.", ""]
    lines += ["| run | folder | agent | mode | finished | seed |", "|---|---|---|---|---:|---:|"]
    lines += [f"| {r.label} | {r.path} | {r.agent} | {r.mode} | {len(r.records)} | {r.seed} |" for r in runs]
    seeds = {str(r.seed) for r in runs}
    if len(seeds) > 1:
        lines += ["", "The runs' seeds differ: the chains are the same, the agents' and simulator's random draws are not."]
    lines.append("")
    for c in comparisons:
        lines += comparison_markdown(c)
    if needed:
        lines += [f"## {comparisons[0].unit.capitalize()} needed", ""] + [f"- {n}" for n in needed] + [""]
    lines += ["Intervals and tests: docs/EVALUATION.md, \"Comparing runs\".", ""]
    return "\n".join(lines)


def plot_comparisons(comparisons: Sequence[Comparison], path: Path) -> None:
    """Left: the main difference (B - A) per comparison with its interval; right: per-task differences."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = comparisons[0]
    scale = 1.0 if first.unit == "chains" else 100.0
    tasks = list(dict.fromkeys(t for c in comparisons for t in c.tasks))
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 1.6 + 0.22 * max(len(tasks), 6)), dpi=120,
                                      gridspec_kw={"width_ratios": [1, 2]})
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for j, c in enumerate(comparisons):
        m = c.main
        ci = m.interval or Interval(m.difference, m.difference)
        left.errorbar([j], [m.difference * scale], yerr=[[(m.difference - ci.low) * scale], [(ci.high - m.difference) * scale]],
                      fmt="o", capsize=5, color=colors[j % len(colors)])
        offset = (j - (len(comparisons) - 1) / 2) * 0.25
        rows = [(y, c.tasks[t]) for y, t in enumerate(tasks) if t in c.tasks and c.tasks[t]["difference"] is not None]
        if rows:
            x = np.array([d["difference"] for _, d in rows]) * 100
            lo, hi = (np.array([d["interval"][k] for _, d in rows]) * 100 for k in ("low", "high"))
            right.errorbar(x, [y + offset for y, _ in rows], xerr=[x - lo, hi - x], fmt="o", ms=3, capsize=2,
                           elinewidth=0.8, color=colors[j % len(colors)], label=f"{c.b.label} - {c.a.label}")
    left.axhline(0, color="#888888", lw=0.8)
    left.set_xticks(range(len(comparisons)), [f"{c.b.label} - {c.a.label}" for c in comparisons])
    left.set(xlim=(-0.7, len(comparisons) - 0.3),
             ylabel=("avg. len" if first.unit == "chains" else "success rate (points)") + f", {LEVEL * 100:g} % CI",
             title=f"difference ({first.main.n} paired {first.unit})" if len(comparisons) == 1 else "difference")
    right.axvline(0, color="#888888", lw=0.8)
    right.set_yticks(range(len(tasks)), tasks)
    right.invert_yaxis()
    right.tick_params(axis="y", labelsize=7)
    right.set(xlim=(-105, 105), xlabel=f"success rate difference (points), {LEVEL * 100:g} % CI (Newcombe)", title="per task")
    if right.get_legend_handles_labels()[0]:
        right.legend(fontsize=7, loc="lower right")
    for ax in (left, right):
        ax.title.set_fontsize(9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def default_out(runs: Sequence[Run]) -> Path:
    return Path("runs") / "compare" / "-vs-".join(r.path.name for r in runs)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.eval compare",
                                 description="Paired comparison of evaluation runs (each later run against the first).")
    ap.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="evaluation output folders; the first is the reference")
    ap.add_argument("--out", type=Path, help="folder for compare.md, compare.json, compare.png (default runs/compare/A-vs-B)")
    ap.add_argument("--allow-protocol-mismatch", action="store_true", help="compare runs whose protocol settings differ")
    ap.add_argument("--chains-needed", action="store_true", help="how many paired chains would resolve a difference")
    ap.add_argument("--detect", type=float, help="--chains-needed: the difference to resolve (avg. len, or a success-rate "
                    "fraction in single-task mode); default: the observed one")
    ap.add_argument("--resamples", type=int, default=RESAMPLES, help="bootstrap resamples (default %(default)s)")
    ap.add_argument("--seed", type=int, default=BOOTSTRAP_SEED, help="bootstrap seed (default %(default)s)")
    args = ap.parse_args(argv)
    if len(args.runs) < 2:
        ap.error("name at least two runs (the first is the reference)")
    if args.detect is not None and (args.detect == 0 or not args.chains_needed):
        ap.error("--detect takes a non-zero difference and goes with --chains-needed")
    if args.resamples < 100:
        ap.error(f"--resamples must be at least 100, got {args.resamples}")
    try:
        runs = [load_run(p, chr(ord("A") + i)) for i, p in enumerate(args.runs)]
        comparisons = [compare_runs(runs[0], r, args.allow_protocol_mismatch, args.resamples, args.seed) for r in runs[1:]]
    except CompareError as e:
        print(f"harness.eval compare: {e}", file=sys.stderr)
        return 2
    needed = [line for c in comparisons for line in chains_needed(c, args.detect)] if args.chains_needed else []
    text = report_markdown(runs, comparisons, needed)
    out = args.out or default_out(runs)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.md").write_text(text)
    (out / "compare.json").write_text(json.dumps({"runs": [{"label": r.label, "path": str(r.path), "agent": r.agent} for r in runs],
                                                  "comparisons": [c.to_dict() for c in comparisons],
                                                  "verdicts": [verdict(c) for c in comparisons],
                                                  "chains_needed": needed}, indent=2) + "\n")
    plot_comparisons(comparisons, out / "compare.png")
    print(text + f"written: {out / 'compare.md'}, {out / 'compare.json'}, {out / 'compare.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
