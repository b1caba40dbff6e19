"""Timing of harness.tasks: the evaluation chain generator, its on-disk cache, and the task oracle.

    python benchmarks/bench_tasks.py

Reference (docs/CALVIN.md#reference-speed): CALVIN's get_sequences(1000) takes about 45 s on 2 cores and
calvin_env's full 34-task oracle check about 0.7 ms. The cache is timed in a temporary folder, as a
later start finds it: read, digest checked, parsed. The oracle is timed on the synthetic infos of
tests/task_infos.py (three blocks, a handful of contacts each, like the real scene's).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import timeit
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.tasks import TaskOracle, eval_chains  # noqa: E402
from harness.tasks import chains as chains_module  # noqa: E402
from tests.task_infos import Scene  # noqa: E402


def _timed_start() -> float:
    """eval_chains(1000) as a fresh process calls it (nothing in memory)."""
    chains_module._generate.cache_clear()
    t0 = time.perf_counter()
    eval_chains(1000)
    return time.perf_counter() - t0


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        os.environ["VLA_HARNESS_CACHE"] = folder
        generated = _timed_start()  # empty cache: generated, then written
        from_disk = min(_timed_start() for _ in range(5))
    print(f"eval_chains(1000), first start (generated and cached): {generated:.2f} s")
    print(f"eval_chains(1000), later start (from the cache file): {from_disk * 1e3:.1f} ms "
          f"({generated / from_disk:.0f}x faster)")
    t0 = time.perf_counter()
    eval_chains(1000)
    print(f"eval_chains(1000), again in the same process: {(time.perf_counter() - t0) * 1e3:.2f} ms")

    start = Scene().info()
    end = replace(Scene(), drawer=0.2).block("red", rpy_deg=(0.0, 0.0, 10.0)).info()
    oracle = TaskOracle()
    n = 2000
    full = timeit.timeit(lambda: oracle.completed(start, end), number=n) / n
    one = timeit.timeit(lambda: oracle.is_completed("rotate_red_block_right", start, end), number=n) / n
    joint = timeit.timeit(lambda: oracle.is_completed("open_drawer", start, end), number=n) / n
    print(f"oracle, all 34 tasks: {full * 1e3:.3f} ms")
    print(f"oracle, one task (rotate, the costliest): {one * 1e3:.3f} ms; (open_drawer): {joint * 1e3:.4f} ms")


if __name__ == "__main__":
    main()
