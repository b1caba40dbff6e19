"""benchmarks/bench_fidelity.py's open-loop replay, checked where the answer is known: a chain recorded in the
built-in scene and replayed there (a new env per chain, a reset restores the state exactly) must come out
the same, step for step."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_fidelity.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_fidelity", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_replay_in_the_recording_simulator_agrees_exactly():
    bench = _bench()
    chains = bench.record_chains("builtin", "D", 2)
    assert all(len(c["robot_obs"]) == 1 + sum(len(a) for a in c["actions"]) for c in chains)
    replayed = bench.replay_chains("builtin", "D", chains, lateness=0)
    for chain, replay in zip(chains, replayed):
        assert replay["completed"] == chain["record"]["completed"]
        assert replay["first_subtask_success"] == chain["record"]["subtasks"][0]["success"]
        for key in ("tcp", "blocks", "furniture"):
            assert len(replay[key]) == len(chain["robot_obs"]) and np.max(replay[key]) < 1e-9, key
