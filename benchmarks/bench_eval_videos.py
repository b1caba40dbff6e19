"""The evaluation's videos made while the rollouts run vs after them, one after another.

    python benchmarks/bench_eval_videos.py [--chains 50] [--workers 2] [--videos 3] [--video-failures 5]

The scripted expert on built-in scene D, CALVIN's first chains, the main job's video settings, in one run:
  during: run_evaluation with videos on (the pool's render process makes each as soon as it is sure to be kept);
  after:  the same evaluation with videos off (the rollouts alone), then the same videos rendered in this
          process one after another from the traces `during` recorded (`render_videos`, what the end of
          an evaluation does with the videos left over, and what it did with all of them before).
The two must give the same video files, byte for byte; the script checks it. The work is the same either
way: rendering during the rollouts only fills cores that would otherwise wait, so load from other
processes on the machine shrinks the gain (the load average is printed), and more free cores than
workers raise it.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.eval import AgentConfig, EnvConfig, EvalSettings, run_evaluation  # noqa: E402
from harness.eval.video import TraceStore, VideoSettings, render_videos  # noqa: E402


def evaluate(folder: Path, chains: int, workers: int, videos: int, failures: int) -> float:
    settings = EvalSettings(num_chains=chains, workers=workers, videos=videos, video_failures=failures, progress=False)
    start = time.perf_counter()
    run_evaluation(settings, EnvConfig(scene="D"), AgentConfig("scripted"), folder, print_summary=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chains", type=int, default=50)  # the expert's first 5 failures are in its first 50 chains
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--videos", type=int, default=3)
    parser.add_argument("--video-failures", type=int, default=5)
    args = parser.parse_args()
    print(f"{args.chains} chains, {args.workers} workers, {os.cpu_count()} CPU cores, "
          f"load average {os.getloadavg()[0]:.2f} at the start")
    start = time.perf_counter()  # CALVIN's chain list, generated once per machine: not in the first side's time
    EvalSettings(num_chains=args.chains).jobs()
    print(f"chain list ready in {time.perf_counter() - start:.1f} s (untimed)")
    with tempfile.TemporaryDirectory() as tmp:
        during, after = Path(tmp) / "during", Path(tmp) / "after"
        during_s = evaluate(during, args.chains, args.workers, args.videos, args.video_failures)
        rollouts_s = evaluate(after, args.chains, args.workers, 0, 0)
        start = time.perf_counter()
        selected = TraceStore(during / "traces", args.videos, args.video_failures).selected()
        render_videos(selected, after / "videos", EnvConfig(scene="D"), VideoSettings())
        serial_s = time.perf_counter() - start
        names = sorted(p.name for p in (during / "videos").iterdir())
        same = names == sorted(p.name for p in (after / "videos").iterdir()) and all(
            filecmp.cmp(during / "videos" / n, after / "videos" / n, shallow=False) for n in names)
    print(f"after:  rollouts {rollouts_s:.1f} s + {len(names)} videos one after another {serial_s:.1f} s "
          f"= {rollouts_s + serial_s:.1f} s")
    print(f"during: rollouts with the videos made beside them {during_s:.1f} s: "
          f"{(rollouts_s + serial_s) / during_s:.2f}x faster; videos {'identical' if same else 'DIFFER'}")
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
