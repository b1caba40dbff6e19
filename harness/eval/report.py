"""The report files of a run's output folder: results.json, report.md and the PNG plots.

results.json has CALVIN's own keys at the top level (`avg_seq_len`, `chain_sr`, `task_info`) so that
tools written for CALVIN's file read it, and the project's additions beside them, among them `intervals`
(harness.eval.stats), which the tables, the printout after CALVIN's lines and the plots' error bars show.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from harness.durable_files import atomic_write_text
from harness.eval.results import calvin_printout
from harness.eval.stats import interval_text, wilson

CHAIN_PLOT = "chain_success.png"
TASK_PLOT = "task_success.png"


def _level(results: dict[str, Any]) -> str:
    return f"{results['intervals']['level'] * 100:g} % CI"


def calvin_table(results: dict[str, Any]) -> str:
    """CALVIN's results table as markdown: success after 1..5 chained subtasks and the average length, and
    below them their intervals."""
    env, agent, intervals = results["env"], results["agent"], results["intervals"]
    name = agent["name"] + (f" ({agent['checkpoint']})" if agent.get("checkpoint") else "")
    srs = " | ".join(f"{sr * 100:.1f}%" for sr in results["chain_sr"].values())
    cis = " | ".join(interval_text(intervals["chain_sr"][i], percent=True) for i in results["chain_sr"])
    return (
        "| agent | env | chains | 1 | 2 | 3 | 4 | 5 | Avg. Len. |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---:|\n"
        f"| {name} | {env['backend']} {env['scene']} | {results['num_chains']} | {srs} | {results['avg_seq_len']:.2f} |\n"
        f"| {_level(results)} | | | {cis} | {interval_text(intervals['avg_seq_len'])} |"
    )


def single_task_table(results: dict[str, Any]) -> str:
    intervals = results["intervals"]
    rows = [f"| task | success | episodes | rate | {_level(results)} |", "|---|---:|---:|---:|---:|"]
    rows += [f"| {t} | {c['success']} | {c['total']} | {c['rate'] * 100:.1f}% | {interval_text(intervals['tasks'][t], percent=True)} |"
             for t, c in results["tasks"].items()]
    rows.append(f"| **all** | | {results['episodes']} | {results['success_rate'] * 100:.1f}% | "
                f"{interval_text(intervals['success_rate'], percent=True)} |")
    return "\n".join(rows)


def interval_printout(results: dict[str, Any]) -> str:
    """The intervals of CALVIN's printed numbers, line by line as CALVIN prints them (after its lines)."""
    intervals = results["intervals"]
    method = intervals["method"]
    lines = [f"{_level(results)}s, {results['num_chains']} chains. Avg. len: {method['avg_seq_len']}; "
             f"rates: {method['chain_sr']}.",
             f"Average successful sequence length: {results['avg_seq_len']:.3f} {interval_text(intervals['avg_seq_len'], digits=3)}"]
    lines += [f"{i}: {sr * 100:.1f}% {interval_text(intervals['chain_sr'][i], percent=True)}" for i, sr in results["chain_sr"].items()]
    lines += [f"{t}: {c['success']} / {c['total']} {interval_text(intervals['task_info'][t], percent=True)}"
              for t, c in results["task_info"].items()]
    return "\n".join(lines)


def console_summary(results: dict[str, Any]) -> str:
    """What the evaluation prints at the end: CALVIN's lines unchanged, then their intervals and the table
    (and the policy servers' figures, when the workers had one)."""
    if results["mode"] == "chains":
        text = f"{calvin_printout(results)}\n\n{interval_printout(results)}\n\n{calvin_table(results)}"
    else:
        text = single_task_table(results)
    if results.get("server"):
        text += f"\n\nPolicy server:\n{server_table(results['server'])}"
    return text


def _task_rates(results: dict[str, Any]) -> dict[str, tuple[int, int]]:
    source = results["task_info"] if results["mode"] == "chains" else results["tasks"]
    return {t: (c["success"], c["total"]) for t, c in source.items()}


def _task_intervals(results: dict[str, Any]) -> dict[str, Any]:
    return results["intervals"]["task_info" if results["mode"] == "chains" else "tasks"]


def _error_bars(percents: Sequence[float], intervals: Sequence[dict[str, float] | None]) -> list[list[float]]:
    """matplotlib's asymmetric errors (below, above) in percent, from {"low", "high"} fractions (none: 0)."""
    below = [p - i["low"] * 100 if i else 0.0 for p, i in zip(percents, intervals)]
    above = [i["high"] * 100 - p if i else 0.0 for p, i in zip(percents, intervals)]
    return [below, above]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_chain_success(results: dict[str, Any], path: Path) -> None:
    plt = _pyplot()
    values = [sr * 100 for sr in results["chain_sr"].values()]
    errors = _error_bars(values, [results["intervals"]["chain_sr"][i] for i in results["chain_sr"]])
    fig, ax = plt.subplots(figsize=(5, 3.4), dpi=120)
    positions = [int(i) for i in results["chain_sr"]]
    ax.bar(positions, values, color="#3b7dd8", yerr=errors, capsize=4, ecolor="#222222")
    for x, v, up in zip(positions, values, errors[1]):
        ax.text(x, v + up + 1.5, f"{v:.1f}%", ha="center", fontsize=8)
    ax.set_xticks(positions)
    avg_ci = interval_text(results["intervals"]["avg_seq_len"])
    ax.set(ylim=(0, 112), xlabel="subtasks completed in a row", ylabel=f"chains (%), {_level(results)}",
           title=f"{results['agent']['name']}: avg len {results['avg_seq_len']:.2f} {avg_ci} over {results['num_chains']} chains")
    ax.title.set_fontsize(9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_task_success(results: dict[str, Any], path: Path) -> None:
    plt = _pyplot()
    rates = _task_rates(results)
    names = list(rates) or ["(no subtask attempted)"]
    values = [s / t * 100 for s, t in rates.values()] or [0.0]
    errors = _error_bars(values, [_task_intervals(results)[t] for t in rates] or [None])
    fig, ax = plt.subplots(figsize=(6, 0.9 + 0.22 * len(names)), dpi=120)
    ax.barh(names, values, color="#40a070", xerr=errors, capsize=2, ecolor="#222222", error_kw={"elinewidth": 0.8})
    for y, ((s, t), v, right) in enumerate(zip(rates.values(), values, errors[1])):
        ax.text(v + right + 1.5, y, f"{s}/{t}", va="center", fontsize=7)
    ax.invert_yaxis()
    ax.set(xlim=(0, 125), xlabel=f"success (%), {_level(results)} (Wilson)",
           title="success per task (successes / attempts)")
    ax.tick_params(axis="y", labelsize=7)
    ax.title.set_fontsize(9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _rate_cells(counts: dict[str, int]) -> str:
    """'rate | Wilson interval' of a {"success", "total"} count ('- | -' when nothing was attempted)."""
    interval = wilson(counts["success"], counts["total"])
    if interval is None:
        return "- | -"
    return f"{counts['success'] / counts['total'] * 100:.1f}% | {interval.text(percent=True)}"


def _interval_note(results: dict[str, Any]) -> str:
    methods = "; ".join(f"{k}: {v}" for k, v in results["intervals"]["method"].items())
    return f"{_level(results)} ({methods}; see docs/EVALUATION.md, Intervals)."


def _kv_table(items: dict[str, Any]) -> str:
    rows = ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in items.items()]
    return "\n".join(rows)


def server_table(servers: list[dict[str, Any]]) -> str:
    """One row per rank's policy server: latency percentiles (message read -> action ready), batches."""
    rows = ["| rank | requests | latency p50 / p95 / p99 (ms) | mean batch | largest batch | peak memory (MB) | restarts |",
            "|---:|---:|---|---:|---:|---:|---:|"]
    for s in servers:
        lat = s.get("latency_ms") or {}
        rows.append(f"| {s['rank']} | {s['requests']} | {lat.get('p50', '-')} / {lat.get('p95', '-')} / {lat.get('p99', '-')} "
                    f"| {s.get('mean_batch')} | {s.get('max_batch_reached')} | {s.get('peak_rss_mb')} | {s.get('restarts', 0)} |")
    return "\n".join(rows)


def report_markdown(results: dict[str, Any], videos: Sequence[str]) -> str:
    env, agent = results["env"], results["agent"]
    parts = [f"# CALVIN evaluation: {agent['name']} on {env['backend']} scene {env['scene']}", ""]
    if results["mode"] == "chains":
        parts += [calvin_table(results), "", _interval_note(results), "",
                  f"![chain success]({CHAIN_PLOT})", f"![task success]({TASK_PLOT})", ""]
        parts += ["## Success by position in the chain", "",
                  "The subtasks attempted at each position (later ones start where the agent left the scene).", "",
                  f"| position | success | attempts | rate | {_level(results)} (Wilson) |", "|---|---:|---:|---:|---:|"]
        parts += [f"| {k} | {c['success']} | {c['total']} | {_rate_cells(c)} |" for k, c in results["positions"].items()]
        parts += ["", "## Per task", "",
                  f"| task | success | attempts | rate | {_level(results)} | as 1st subtask | later in the chain |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for t, c in results["task_info"].items():
            first, later = (results["task_positions"][t][k] for k in ("first", "later"))
            parts.append(f"| {t} | {c['success']} | {c['total']} | {c['success'] / c['total'] * 100:.1f}% | "
                         f"{interval_text(results['intervals']['task_info'][t], percent=True)} | "
                         f"{first['success']}/{first['total']} | {later['success']}/{later['total']} |")
    else:
        parts += ["Single-task mode: each episode is one subtask from a random state where it is valid (a start condition, "
                  "or for seven tasks one after the scripted expert's setup; docs/EVALUATION.md).", "",
                  single_task_table(results), "", _interval_note(results), "", f"![task success]({TASK_PLOT})"]
    actions = results["actions"]
    parts += ["", "## Failures", "", _kv_table(results["failure_reasons"]), "",
              f"Relative actions outside [-1, 1]: {actions['out_of_range_relative']} of {actions['steps']} steps. "
              f"Chains run again after an env error: {actions['retried_after_env_error']}; after their worker died: "
              f"{actions.get('rerun_after_worker_death', 0)}.", ""]
    parts += ["## Setup", "", _kv_table({
        "agent": agent["name"], "checkpoint": agent.get("checkpoint") or "-", "action type": agent["action_type"],
        "cameras": ", ".join(agent["cameras"]) or "none", "privileged": agent["privileged"],
        "env backend": env["backend"], "scene": env["scene"], "renderer": env["renderer"], "env version": env.get("version", ""),
        **{k.replace("_", " "): v for k, v in results["protocol"].items()},
    }), ""]
    parts += ["## Timings", "", _kv_table(results["timings"]), ""]
    if results.get("server"):
        parts += ["## Policy server", "", server_table(results["server"]), ""]
    if videos:
        parts += ["## Videos", ""] + [f"- [{Path(v).name}]({v})" for v in videos] + [""]
    if results["mode"] == "chains":
        parts += ["## CALVIN's printout", "", "```", calvin_printout(results), "```", ""]
    return "\n".join(parts)


def write_reports(folder: Path, results: dict[str, Any]) -> None:
    """results.json, report.md and the plots (chain_success.png in chains mode, task_success.png always)."""
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "results.json", json.dumps(results, indent=2) + "\n")
    if results["mode"] == "chains":
        plot_chain_success(results, folder / CHAIN_PLOT)
    plot_task_success(results, folder / TASK_PLOT)
    (folder / "report.md").write_text(report_markdown(results, results.get("videos", [])))
