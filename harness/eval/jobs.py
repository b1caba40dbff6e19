"""Units of evaluation work: a chain of CALVIN's benchmark list, or one single-task episode.

A job carries everything a worker needs (start condition, tasks, seed), so any worker on any rank runs
it the same way. `key` is stable across runs (it is what resume matches on), `index` orders the results.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterable

import numpy as np

from harness.tasks import TASK_NAMES, benchmark_chains, initial_conditions, valid_tasks
from harness.tasks.catalog import check_task_names, task_index


@dataclass(frozen=True)
class Job:
    key: str  # "chain/17" or "open_drawer/3"
    index: int  # position in this run's job list (chains: the chain's place in CALVIN's list)
    condition: dict[str, Any]
    tasks: tuple[str, ...]
    seed: int  # for the agent and the global RNGs, fixed per job

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "index": self.index, "condition": dict(self.condition),
                "tasks": list(self.tasks), "seed": self.seed}


def chain_jobs(num_chains: int, seed: int = 0) -> list[Job]:
    """The first `num_chains` of CALVIN's 1000 evaluation chains, in CALVIN's order; seed + index per chain."""
    return [
        Job(f"chain/{i}", i, condition, tuple(tasks), seed + i)
        for i, (condition, tasks) in enumerate(benchmark_chains(num_chains))
    ]


@lru_cache(maxsize=1)
def _conditions_by_task() -> dict[str, tuple[int, ...]]:
    """For each task, the indices of the 192 start conditions in which it is valid."""
    valid = [set(valid_tasks(c)) for c in initial_conditions()]
    return {t: tuple(i for i, v in enumerate(valid) if t in v) for t in TASK_NAMES}


def single_task_names() -> tuple[str, ...]:
    """Tasks that can start from one of the 192 conditions (not place/stack/unstack/lift-from-drawer)."""
    return tuple(t for t, conds in _conditions_by_task().items() if conds)


def single_task_jobs(tasks: Iterable[str] | None, episodes: int, seed: int = 0) -> list[Job]:
    """`episodes` episodes per task, each from a random start condition in which the task is valid.

    Episode e of task t depends only on (seed, t, e): asking for more episodes or other tasks later keeps
    the episodes already run, so resume works across such changes.
    """
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"episodes_per_task must be a positive int, got {episodes!r}")
    names = single_task_names() if tasks is None else check_task_names(tasks)
    by_task = _conditions_by_task()
    impossible = [t for t in names if not by_task[t]]
    if impossible:
        raise ValueError(
            f"single-task evaluation starts from CALVIN's 192 start conditions; no start condition allows "
            f"{', '.join(impossible)} (tasks that can: {', '.join(single_task_names())})"
        )
    conditions = initial_conditions()
    jobs = []
    for t in names:
        for e in range(episodes):
            seq = np.random.SeedSequence([seed, task_index(t), e])
            rng = np.random.default_rng(seq)
            condition = conditions[by_task[t][int(rng.integers(len(by_task[t])))]]
            jobs.append(Job(f"{t}/{e}", len(jobs), condition, (t,), int(seq.generate_state(1)[0])))
    return jobs
