"""Units of evaluation work: a chain of CALVIN's benchmark list, or one single-task episode.

A job carries everything a worker needs (start condition, tasks, seed), so any worker on any rank runs
it the same way. `key` is stable across runs (it is what resume matches on), `index` orders the results.

Single-task episodes start from a random valid state of their task. For 27 of the 34 tasks that is one of
CALVIN's 192 start conditions in which the task is valid. The other seven (place_in_slider, place_in_drawer,
stack_block, unstack_block, lift_*_block_drawer) are valid in no start condition: they need a block in the
gripper, in the drawer or stacked. Their episodes start from a start condition after a setup: the shortest
sequence of tasks that makes the task valid there (a lift; a lift then stack_block; push_into_drawer), which
the scripted expert performs before the agent gets the scene, as the previous subtasks of a chain would have
left it. The setup is not scored. A setup that leaves the block where the task is to put it is left out
(lifting a block from the slider leaves it hanging over the slider: opening the gripper would place it).
Should the expert fail the setup, or the task not be valid after it, the episode takes the next of its
other starts and setups (`redrawn`), so every scored episode starts from a state in which its task is valid.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterable

import numpy as np

from harness.tasks import TASK_NAMES, apply_task, benchmark_chains, initial_conditions, valid_tasks
from harness.tasks.catalog import check_task_names, task_index

MAX_SETUP = 2  # tasks in a single-task episode's setup: all 34 tasks need at most two
# a setup may not end by taking the block from where the task puts it (the task would be one gripper opening)
SETUP_LAST_EXCLUDED = {"place_in_slider": "_slider", "place_in_drawer": "_drawer"}


@dataclass(frozen=True)
class Job:
    key: str  # "chain/17" or "open_drawer/3"
    index: int  # position in this run's job list (chains: the chain's place in CALVIN's list)
    condition: dict[str, Any]
    tasks: tuple[str, ...]
    seed: int  # for the agent and the global RNGs, fixed per job
    setup: tuple[str, ...] = ()  # single-task: what the scripted expert does first, unscored (module doc)

    def to_dict(self) -> dict[str, Any]:
        d = {"key": self.key, "index": self.index, "condition": dict(self.condition), "tasks": list(self.tasks),
             "seed": self.seed}
        return {**d, "setup": list(self.setup)} if self.setup else d


def chain_jobs(num_chains: int, seed: int = 0) -> list[Job]:
    """The first `num_chains` of CALVIN's 1000 evaluation chains, in CALVIN's order; seed + index per chain."""
    return [
        Job(f"chain/{i}", i, condition, tuple(tasks), seed + i)
        for i, (condition, tasks) in enumerate(benchmark_chains(num_chains))
    ]


@lru_cache(maxsize=None)
def task_starts(task: str) -> tuple[tuple[int, tuple[str, ...]], ...]:
    """(start condition index, setup) pairs from which `task` can be done: every condition in which it is valid
    with no setup; for a task valid in none, every shortest setup (up to MAX_SETUP tasks; not those
    SETUP_LAST_EXCLUDED names) from every condition, in the order of the conditions and then of CALVIN's task
    list."""
    frontier = [(i, dict(c), ()) for i, c in enumerate(initial_conditions())]
    excluded = SETUP_LAST_EXCLUDED.get(task)
    for _ in range(MAX_SETUP + 1):
        found = tuple((i, setup) for i, state, setup in frontier if task in valid_tasks(state)
                      and not (setup and excluded and setup[-1].endswith(excluded)))
        if found:
            return found
        frontier = [(i, apply_task(state, t), (*setup, t)) for i, state, setup in frontier for t in valid_tasks(state)]
    return ()


def _start_job(key: str, index: int, task: str, start: int, seed: int) -> Job:
    condition, setup = task_starts(task)[start]
    return Job(key, index, initial_conditions()[condition], (task,), seed, setup)


def redrawn(job: Job, draw: int) -> Job:
    """The single-task episode with another start and setup of its task (draw 1, 2, ...; each a different one,
    none the job's own), from the job's seed: for when the scripted expert failed the setup."""
    starts = task_starts(job.tasks[0])
    own = starts.index(next(s for s in starts if initial_conditions()[s[0]] == job.condition and s[1] == job.setup))
    others = [k for k in np.random.default_rng(job.seed).permutation(len(starts)).tolist() if k != own]
    if not others:  # the task has one start and setup only (none of CALVIN's 34): draw it again
        return job
    return _start_job(job.key, job.index, job.tasks[0], others[(draw - 1) % len(others)], job.seed)


def single_task_jobs(tasks: Iterable[str] | None, episodes: int, seed: int = 0) -> list[Job]:
    """`episodes` episodes per task, each from a random start condition in which the task is valid.

    Episode e of task t depends only on (seed, t, e): asking for more episodes or other tasks later keeps
    the episodes already run, so resume works across such changes.
    """
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"episodes_per_task must be a positive int, got {episodes!r}")
    names = TASK_NAMES if tasks is None else check_task_names(tasks)
    jobs = []
    for t in names:
        for e in range(episodes):
            seq = np.random.SeedSequence([seed, task_index(t), e])
            start = int(np.random.default_rng(seq).integers(len(task_starts(t))))
            jobs.append(_start_job(f"{t}/{e}", len(jobs), t, start, int(seq.generate_state(1)[0])))
    return jobs
