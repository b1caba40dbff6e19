"""Evaluation throughput with 1 and with 2 worker processes, on the same chains, in one run.

    python benchmarks/bench_eval_workers.py [--agent scripted|random] [--chains 40] [--ep-len N]
                                            [--workers 1 2] [--repeats 2] [--scene D] [--json PATH]

The default agent is the scripted expert when it is importable (agents.scripted.ScriptedExpert), else
the random agent with a shorter ep_len (120): the output says which. Workers are started and have built
their env and agent before the clock starts, so the figure is rollout throughput (chains/min), not
process start-up. The worker counts alternate (--repeats) and the best run of each counts, so that load
from other processes on the machine disturbs the ratio less. The chains' results must be identical
whatever the worker count; the script checks it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.eval.jobs import chain_jobs  # noqa: E402
from harness.eval.runner import RunSettings, WorkerPool  # noqa: E402
from harness.eval.specs import AgentConfig, EnvConfig  # noqa: E402


def default_agent() -> tuple[str, int]:
    try:
        from agents.scripted import ScriptedExpert  # noqa: F401
    except ImportError:
        return "random", 120
    return "scripted", 360


def measure(workers: int, jobs, env: EnvConfig, agent: AgentConfig, ep_len: int) -> tuple[float, float, dict]:
    """chains/min, the workers' mean CPU seconds per chain, and each chain's (completed, final state)."""
    records: dict[str, dict] = {}
    with WorkerPool(workers, env, agent, RunSettings(ep_len=ep_len)) as pool:
        pool.wait_ready()
        start = time.perf_counter()
        pool.run(jobs, lambda record, _: records.__setitem__(record["key"], record))
        elapsed = time.perf_counter() - start
    cpu = sum(r["cpu_s"] for r in records.values()) / len(records)
    return len(jobs) / elapsed * 60, cpu, {k: (r["completed"], r["final_state"]) for k, r in records.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agent", choices=("scripted", "random"), default=None)
    parser.add_argument("--chains", type=int, default=40)
    parser.add_argument("--ep-len", type=int, default=None)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs per worker count; the best counts")
    parser.add_argument("--scene", default="D")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    name, ep_len = default_agent() if args.agent is None else (args.agent, 360 if args.agent == "scripted" else 120)
    ep_len = args.ep_len or ep_len
    agent = AgentConfig(name)
    env = EnvConfig(scene=args.scene)
    jobs = chain_jobs(args.chains)
    print(f"agent: {name} (ep_len {ep_len}), {args.chains} chains, scene {args.scene}, "
          f"{os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}, "
          f"load average {os.getloadavg()[0]:.2f} (other processes on the cores lower the ratio)")
    rates: dict[int, float] = {}
    cpu: dict[int, float] = {}
    reference = None
    for repeat in range(args.repeats):  # alternating, so that load from other processes hits both alike
        for workers in args.workers:
            rate, cpu_s, results = measure(workers, jobs, env, agent, ep_len)
            rates[workers] = max(rates.get(workers, 0.0), rate)
            cpu[workers] = min(cpu.get(workers, float("inf")), cpu_s)
            same = "" if reference is None else ("  results identical" if results == reference else "  RESULTS DIFFER")
            reference = reference or results
            print(f"run {repeat + 1}: {workers} worker(s): {rate:8.1f} chains/min, {cpu_s * 1000:6.1f} CPU ms/chain{same}")
    print("best of the runs: " + ", ".join(f"{w} worker(s) {r:.1f} chains/min" for w, r in rates.items()))
    base = args.workers[0]
    for workers in args.workers[1:]:
        # on free cores a CPU-bound worker's chains/min is 60 / (CPU s per chain): the ratio it would reach
        ideal = workers / base * cpu[base] / cpu[workers]
        print(f"speed-up {workers} vs {base} worker(s): {rates[workers] / rates[base]:.2f}x measured; "
              f"{ideal:.2f}x on {workers} free cores (from CPU time per chain, which other load does not inflate)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"agent": name, "ep_len": ep_len, "chains": args.chains, "chains_per_min": rates,
                       "cpu_s_per_chain": cpu}, f, indent=2)


if __name__ == "__main__":
    main()
