"""Agent step latency: cached (backbone on the new frame only) vs recomputing the whole window each step.

    python benchmarks/bench_agent_step.py                       # tiny_llava, LSTM head, windows 8 and 16
    python benchmarks/bench_agent_step.py --head gpt --gripper  # other head, with the wrist camera

Both paths run on the same model and the same frames, alternating step by step (so machine load hits both
alike); the script reports the largest difference between their chunks, the median ms/step in the steady
state (window full and sliding) and the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.vla.config import BackboneConfig, HeadConfig, VLAConfig  # noqa: E402
from agents.vla.inference import EpisodeStream  # noqa: E402
from agents.vla.model import VLAModel  # noqa: E402
from agents.vla.tiny import TINY_PRESETS  # noqa: E402


def frames(n: int, gripper: bool, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        f = {"rgb_static": torch.randint(0, 256, (1, 1, 200, 200, 3), dtype=torch.uint8, generator=g),
             "robot_obs": torch.randn(1, 1, 15, generator=g), "instruction": ["open the drawer"]}
        if gripper:
            f["rgb_gripper"] = torch.randint(0, 256, (1, 1, 84, 84, 3), dtype=torch.uint8, generator=g)
        out.append(f)
    return out


def time_side_by_side(model: VLAModel, seq: list[dict], warm: int) -> tuple[list[float], list[float], float]:
    """Step the cached and the recompute stream on the same frames, alternating, so that both see the same
    machine load. Returns the per-step seconds of both after `warm` steps (window full), and the largest
    difference between their chunks."""
    cached, full = EpisodeStream(model, cached=True), EpisodeStream(model, cached=False)
    t_cached, t_full, diff = [], [], 0.0
    for t, f in enumerate(seq):
        start = time.perf_counter()
        a = cached.step(f)
        mid = time.perf_counter()
        b = full.step(f)
        end = time.perf_counter()
        if t >= warm:
            t_cached.append(mid - start)
            t_full.append(end - mid)
        diff = max(diff, (a - b).abs().max().item())
    return t_cached, t_full, diff


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", default="tiny_llava", choices=sorted(TINY_PRESETS))
    p.add_argument("--head", default="lstm", choices=["mlp", "lstm", "gpt", "discrete"])
    p.add_argument("--windows", type=int, nargs="+", default=[8, 16])
    p.add_argument("--steps", type=int, default=24, help="timed steps after the window has filled")
    p.add_argument("--chunk", type=int, default=10)
    p.add_argument("--gripper", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--size", nargs="*", default=[], metavar="FIELD=INT",
                   help="tiny backbone size overrides (agents.vla.tiny.TinySize), e.g. hidden=256 vision_hidden=128")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from transformers.utils import logging

    logging.disable_progress_bar()
    print(f"{args.tiny} {' '.join(args.size)}, head={args.head}, chunk={args.chunk}, gripper={args.gripper}, threads={args.threads}, "
          f"torch {torch.__version__}, device=cpu")
    print(f"{'window':>6} {'cached ms/step':>15} {'recompute ms/step':>18} {'speed-up':>9} {'max |diff|':>11}")
    for window in args.windows:
        torch.manual_seed(0)
        size = {k: int(v) for k, v in (kv.split("=") for kv in args.size)}
        cfg = VLAConfig(backbone=BackboneConfig(family=TINY_PRESETS[args.tiny].family, tiny=args.tiny, tiny_size=size),
                        head=HeadConfig(type=args.head, hidden_size=128), window_size=window,
                        chunk_size=args.chunk, use_gripper_image=args.gripper, use_proprio=True)
        model = VLAModel.build(cfg, verbose=False).eval()
        seq = frames(window + args.steps, args.gripper)
        time_side_by_side(model, seq[:3], warm=0)  # warm-up (allocator, prompt cache)
        cached_t, full_t, diff = time_side_by_side(model, seq, warm=window)
        c_ms, f_ms = 1e3 * statistics.median(cached_t), 1e3 * statistics.median(full_t)
        print(f"{window:>6} {c_ms:>15.2f} {f_ms:>18.2f} {f_ms / c_ms:>8.1f}x {diff:>11.1e}")


if __name__ == "__main__":
    main()
