"""CALVIN long-horizon evaluation: rollouts, workers, ranks, resume, results, reports and videos.

    python -m harness.eval agent=scripted env=builtin env.scene=D num_chains=100 workers=2 output_dir=DIR
    python -m harness.eval compare DIR_A DIR_B        # is B better than A, by how much, how sure

    from harness.eval import run_evaluation, evaluate_single_tasks, EvalSettings, EnvConfig, AgentConfig

Modules:
    jobs.py        chains of CALVIN's benchmark list and single-task episodes as jobs
    rollout.py     one chain / one subtask by CALVIN's protocol, failure reasons, state traces
    runner.py      worker processes with a dynamic queue, env-failure retry, dead-worker replacement
    specs.py       picklable env and agent configs that each worker builds from
    store.py       results.jsonl (append-only, crash-safe), rank logs and their merge, the resume check
                   (torchrun ranks, sharding and barriers: harness/ranks.py, shared with the training)
    results.py     CALVIN's metrics (avg_seq_len, chain_sr, task_info) and the project's additions
    stats.py       intervals (Wilson, BCa bootstrap), the exact paired sign-flip test, chains needed
    compare.py     `python -m harness.eval compare A B ...`: paired comparison of runs, with a verdict
    report.py      results.json, report.md, plots
    video.py       traces -> re-rendered MP4/GIF videos with instruction and TCP paths drawn on
    evaluation.py  all of it together: run_evaluation, evaluate_chains, evaluate_single_tasks
    config.py      configs/eval.yaml -> EvalConfig (EvalSettings + EnvConfig + AgentConfig), parsed strictly;
                   the same settings for training rollouts; __main__.py the command line

Names are exported lazily, so importing this package imports neither pybullet nor torch.
"""

from importlib import import_module
from typing import Any

_EXPORTS = {
    "EvalSettings": "config", "EvalConfig": "config", "run_evaluation": "evaluation", "evaluate_chains": "evaluation",
    "evaluate_single_tasks": "evaluation", "EnvConfig": "specs", "AgentConfig": "specs",
    "Job": "jobs", "chain_jobs": "jobs", "single_task_jobs": "jobs", "calvin_metrics": "results",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'harness.eval' has no attribute {name!r}")
    return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)


__all__ = sorted(_EXPORTS)
