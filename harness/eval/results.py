"""CALVIN's numbers from job records (docs/CALVIN.md#scoring), and the project's additions.

    chain_sr[i]   share of chains with at least i consecutive successes, i = 1..5 (a fraction)
    avg_seq_len   mean number of consecutive successes per chain
    task_info     {task: {"success": s, "total": t}}, t = successes + the one failing attempt, per chain

`intervals` (harness.eval.stats): 95 % intervals of those numbers, keyed as they are.

The project's additions for chains (a chain's later subtasks start wherever the agent left the arm and
the scene, unlike single-task episodes, so success can fall with the position):

    positions       {"1".."5": {"success": s, "total": t}}: the subtasks attempted at each position
    task_positions  {task: {"first": {...}, "later": {...}}}: each task as a chain's first subtask, and later

Records are what the runner writes to results.jsonl; a record's "subtasks" stop at the first failure,
so every subtask in it was attempted. Chains recorded with an env error count as failed at that subtask
(as in CALVIN, where an env crash loses the chain); how many there were is reported beside.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterable, Sequence

from harness.eval.rollout import FAILURE_REASONS
from harness.eval.stats import chain_intervals, rate_intervals
from harness.tasks import TASK_NAMES

CHAIN_LENGTH = 5


def _ordered_tasks(counts: dict[str, Any]) -> list[str]:
    return [t for t in TASK_NAMES if t in counts]


def task_info(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, int]]:
    success: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for record in records:
        for sub in record["subtasks"]:
            total[sub["task"]] += 1
            success[sub["task"]] += bool(sub["success"])
    return {t: {"success": success[t], "total": total[t]} for t in _ordered_tasks(total)}


def _tally(pairs: Iterable[tuple[str, bool]]) -> dict[str, dict[str, int]]:
    """(key, success) pairs -> {key: {"success": s, "total": t}} in first-seen order."""
    out: dict[str, dict[str, int]] = {}
    for key, ok in pairs:
        c = out.setdefault(key, {"success": 0, "total": 0})
        c["total"] += 1
        c["success"] += bool(ok)
    return out


def position_info(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Subtasks attempted and succeeded at each chain position 1..5 (a position no chain reached: 0 of 0)."""
    counts = _tally((str(i + 1), sub["success"]) for r in records for i, sub in enumerate(r["subtasks"]))
    return {str(i): counts.get(str(i), {"success": 0, "total": 0}) for i in range(1, CHAIN_LENGTH + 1)}


def task_position_info(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, dict[str, int]]]:
    """Per task: as a chain's first subtask (the start state's robot pose) and later (where the agent left it)."""
    records = list(records)
    where = {"first": _tally((r["subtasks"][0]["task"], r["subtasks"][0]["success"]) for r in records if r["subtasks"]),
             "later": _tally((sub["task"], sub["success"]) for r in records for sub in r["subtasks"][1:])}
    empty = {"success": 0, "total": 0}
    return {t: {k: where[k].get(t, empty) for k in where} for t in _ordered_tasks(task_info(records))}


def calvin_metrics(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """CALVIN's own keys, as its results.json has them (chain_sr keys are "1".."5")."""
    n = len(records)
    completed = [int(r["completed"]) for r in records]
    return {
        "avg_seq_len": sum(completed) / n if n else 0.0,
        "chain_sr": {str(i): (sum(c >= i for c in completed) / n if n else 0.0) for i in range(1, CHAIN_LENGTH + 1)},
        "task_info": task_info(records),
    }


def failure_reasons(records: Iterable[dict[str, Any]]) -> dict[str, int]:
    """How the failing subtasks failed (at most one per record: the one that ended it)."""
    counts = Counter(sub["reason"] for r in records for sub in r["subtasks"] if not sub["success"])
    return {reason: counts.get(reason, 0) for reason in FAILURE_REASONS}


def action_counts(records: Sequence[dict[str, Any]]) -> dict[str, int]:
    return {
        "steps": sum(int(r["steps"]) for r in records),
        "out_of_range_relative": sum(int(r["out_of_range"]) for r in records),
        "retried_after_env_error": sum(int(r["attempts"]) > 1 for r in records),
        "rerun_after_worker_death": sum("worker_deaths" in r for r in records),
    }


def single_task_metrics(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per task success rate over its episodes, the mean over episodes and the mean over tasks."""
    info = task_info(records)
    per_task = {t: {**c, "rate": c["success"] / c["total"]} for t, c in info.items()}
    episodes = sum(c["total"] for c in info.values())
    return {
        "success_rate": sum(c["success"] for c in info.values()) / episodes if episodes else 0.0,
        "mean_task_success_rate": sum(c["rate"] for c in per_task.values()) / len(per_task) if per_task else 0.0,
        "tasks": per_task,
        "episodes": episodes,
    }


def summarize(records: Sequence[dict[str, Any]], mode: str) -> dict[str, Any]:
    """The numbers of results.json (without the run's description and timings)."""
    if mode == "chains":
        numbers = calvin_metrics(records)
        numbers["num_chains"] = len(records)
        numbers["positions"] = position_info(records)
        numbers["task_positions"] = task_position_info(records)
        numbers["intervals"] = chain_intervals([int(r["completed"]) for r in records], numbers["task_info"], CHAIN_LENGTH)
    elif mode == "single_task":
        numbers = single_task_metrics(records)
        numbers["intervals"] = rate_intervals(numbers["tasks"])
    else:
        raise ValueError(f"mode must be 'chains' or 'single_task', got {mode!r}")
    numbers["failure_reasons"] = failure_reasons(records)
    numbers["actions"] = action_counts(records)
    return numbers


def calvin_printout(metrics: dict[str, Any]) -> str:
    """The lines CALVIN's evaluation prints (docs/CALVIN.md#scoring)."""
    lines = [f"Average successful sequence length: {metrics['avg_seq_len']:.3f}", "Success rates for i instructions in a row:"]
    lines += [f"{i}: {sr * 100:.1f}%" for i, sr in metrics["chain_sr"].items()]
    lines.append("")
    for task, c in metrics["task_info"].items():
        lines.append(f"{task}: {c['success']} / {c['total']} |  SR: {c['success'] / c['total'] * 100:.1f}%")
    return "\n".join(lines)


def running_summary(completed: Iterable[int]) -> str:
    """CALVIN's progress-bar text: '1/5 : 90.0% | 2/5 : 70.0% | ... || avg len 3.10'."""
    done = list(completed)
    if not done:
        return ""
    n = len(done)
    parts = [f"{i}/5 : {sum(c >= i for c in done) / n * 100:.1f}%" for i in range(1, CHAIN_LENGTH + 1)]
    return " | ".join(parts) + f" || avg len {sum(done) / n:.2f}"
