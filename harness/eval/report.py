"""The report files of a run's output folder: results.json, report.md and the PNG plots.

results.json has CALVIN's own keys at the top level (`avg_seq_len`, `chain_sr`, `task_info`) so that
tools written for CALVIN's file read it, and the project's additions beside them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from harness.eval.results import calvin_printout

CHAIN_PLOT = "chain_success.png"
TASK_PLOT = "task_success.png"


def calvin_table(results: dict[str, Any]) -> str:
    """CALVIN's results table as markdown: success after 1..5 chained subtasks and the average length."""
    env, agent = results["env"], results["agent"]
    name = agent["name"] + (f" ({agent['checkpoint']})" if agent.get("checkpoint") else "")
    srs = " | ".join(f"{sr * 100:.1f}%" for sr in results["chain_sr"].values())
    return (
        "| agent | env | chains | 1 | 2 | 3 | 4 | 5 | Avg. Len. |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---:|\n"
        f"| {name} | {env['backend']} {env['scene']} | {results['num_chains']} | {srs} | {results['avg_seq_len']:.2f} |"
    )


def single_task_table(results: dict[str, Any]) -> str:
    rows = ["| task | success | episodes | rate |", "|---|---:|---:|---:|"]
    rows += [f"| {t} | {c['success']} | {c['total']} | {c['rate'] * 100:.1f}% |" for t, c in results["tasks"].items()]
    rows.append(f"| **all** | | {results['episodes']} | {results['success_rate'] * 100:.1f}% |")
    return "\n".join(rows)


def console_summary(results: dict[str, Any]) -> str:
    """What the evaluation prints at the end."""
    if results["mode"] == "chains":
        return f"{calvin_printout(results)}\n\n{calvin_table(results)}"
    return single_task_table(results)


def _task_rates(results: dict[str, Any]) -> dict[str, tuple[int, int]]:
    source = results["task_info"] if results["mode"] == "chains" else results["tasks"]
    return {t: (c["success"], c["total"]) for t, c in source.items()}


def plot_chain_success(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = [sr * 100 for sr in results["chain_sr"].values()]
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=120)
    positions = [int(i) for i in results["chain_sr"]]
    bars = ax.bar(positions, values, color="#3b7dd8")
    ax.set_xticks(positions)
    ax.bar_label(bars, labels=[f"{v:.1f}%" for v in values], fontsize=8)
    ax.set(ylim=(0, 105), xlabel="subtasks completed in a row", ylabel="chains (%)",
           title=f"{results['agent']['name']}: avg len {results['avg_seq_len']:.2f} over {results['num_chains']} chains")
    ax.title.set_fontsize(9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_task_success(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = _task_rates(results)
    names = list(rates) or ["(no subtask attempted)"]
    values = [s / t * 100 for s, t in rates.values()] or [0.0]
    fig, ax = plt.subplots(figsize=(6, 0.9 + 0.22 * len(names)), dpi=120)
    bars = ax.barh(names, values, color="#40a070")
    ax.bar_label(bars, labels=[f"{s}/{t}" for s, t in rates.values()] or [""], fontsize=7, padding=2)
    ax.invert_yaxis()
    ax.set(xlim=(0, 115), xlabel="success (%)", title="success per task (successes / attempts)")
    ax.tick_params(axis="y", labelsize=7)
    ax.title.set_fontsize(9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _rate(counts: dict[str, int]) -> str:
    return f"{counts['success'] / counts['total'] * 100:.1f}%" if counts["total"] else "-"


def _kv_table(items: dict[str, Any]) -> str:
    rows = ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in items.items()]
    return "\n".join(rows)


def report_markdown(results: dict[str, Any], videos: Sequence[str]) -> str:
    env, agent = results["env"], results["agent"]
    parts = [f"# CALVIN evaluation: {agent['name']} on {env['backend']} scene {env['scene']}", ""]
    if results["mode"] == "chains":
        parts += [calvin_table(results), "", f"![chain success]({CHAIN_PLOT})", f"![task success]({TASK_PLOT})", ""]
        parts += ["## Success by position in the chain", "",
                  "The subtasks attempted at each position (later ones start where the agent left the scene).", "",
                  "| position | success | attempts | rate |", "|---|---:|---:|---:|"]
        parts += [f"| {k} | {c['success']} | {c['total']} | {_rate(c)} |" for k, c in results["positions"].items()]
        parts += ["", "## Per task", "",
                  "| task | success | attempts | rate | as 1st subtask | later in the chain |", "|---|---:|---:|---:|---:|---:|"]
        for t, c in results["task_info"].items():
            first, later = (results["task_positions"][t][k] for k in ("first", "later"))
            parts.append(f"| {t} | {c['success']} | {c['total']} | {_rate(c)} | {first['success']}/{first['total']} | "
                         f"{later['success']}/{later['total']} |")
    else:
        parts += ["Single-task mode: each episode is one subtask from a random start condition where it is valid.", "",
                  single_task_table(results), "", f"![task success]({TASK_PLOT})"]
    actions = results["actions"]
    parts += ["", "## Failures", "", _kv_table(results["failure_reasons"]), "",
              f"Relative actions outside [-1, 1]: {actions['out_of_range_relative']} of {actions['steps']} steps. "
              f"Chains run again after an env error: {actions['retried_after_env_error']}.", ""]
    parts += ["## Setup", "", _kv_table({
        "agent": agent["name"], "checkpoint": agent.get("checkpoint") or "-", "action type": agent["action_type"],
        "cameras": ", ".join(agent["cameras"]) or "none", "privileged": agent["privileged"],
        "env backend": env["backend"], "scene": env["scene"], "renderer": env["renderer"], "env version": env.get("version", ""),
        **{k.replace("_", " "): v for k, v in results["protocol"].items()},
    }), ""]
    parts += ["## Timings", "", _kv_table(results["timings"]), ""]
    if videos:
        parts += ["## Videos", ""] + [f"- [{Path(v).name}]({v})" for v in videos] + [""]
    if results["mode"] == "chains":
        parts += ["## CALVIN's printout", "", "```", calvin_printout(results), "```", ""]
    return "\n".join(parts)


def write_reports(folder: Path, results: dict[str, Any]) -> None:
    """results.json, report.md and the plots (chain_success.png in chains mode, task_success.png always)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    if results["mode"] == "chains":
        plot_chain_success(results, folder / CHAIN_PLOT)
    plot_task_success(results, folder / TASK_PLOT)
    (folder / "report.md").write_text(report_markdown(results, results.get("videos", [])))
