"""Training throughput (samples/s, s/step) of the real loop: per-frame npz, shards, and shards whose images
are stored at the model's input size (`convert --resize`, so the model skips its per-batch resize).

    python benchmarks/bench_train_throughput.py                          # tiny_llava, B=8, W=8, C=10, fp32, CPU
    python benchmarks/bench_train_throughput.py --batch 4 --workers 2 --precision bf16 --steps 40
    python benchmarks/bench_train_throughput.py --tiny-size hidden=128 vision_hidden=64 --repeats 2
    python benchmarks/bench_train_throughput.py PATH                     # a CALVIN-format dataset root of your own

Without PATH, a CALVIN-layout dataset with rendered-looking images (bench_data_loading's) is written to a
temporary folder and converted to shards (full frames, and at the input size). Each format trains `--steps` optimizer steps of the same
configuration with `harness.train.train` (static camera + proprio, augmentation on, one optimizer step per
batch); the first `--warmup` steps (model warm-up, DataLoader start) are left out and the rest averaged
from metrics.jsonl: samples/s, s/step and the part of a step spent waiting for data. With --repeats the
formats alternate (npz, shards, resized shards, npz, ...) and the best run of each is reported (the machine may be shared).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_data_loading import synthesise  # noqa: E402
from agents.vla.tiny import TinySize  # noqa: E402
from harness.data.shards import convert  # noqa: E402


def train_config(data: Path, fmt: str, out: Path, args: argparse.Namespace):
    from harness.train.config import TrainConfig, compose_config

    size = "{" + ",".join(args.tiny_size) + "}"
    overrides = [
        "trainer=cpu", f"model={args.preset}", f"++model.backbone.tiny_size={size}", f"data.path={data}",
        f"data.format={fmt}", "data.val_split=training", f"output_dir={out}", "run_name=bench",
        f"model.window_size={args.window}", f"model.chunk_size={args.chunk}",  # the data follows the model
        f"trainer.batch_size={args.batch}", f"trainer.max_steps={args.steps}", f"trainer.log_every={args.warmup}",
        "trainer.val_every=0", "trainer.val_samples=8", f"trainer.ckpt_every={args.steps}", "trainer.progress=false",
        f"trainer.num_workers={args.workers}", f"trainer.precision={args.precision}", f"trainer.device={args.device}",
    ]
    return TrainConfig.from_dict(compose_config(overrides))


def measure(cfg, out: Path) -> dict[str, float]:
    from harness.train import train

    train(cfg)
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steady = [r for r in lines if "samples_per_s" in r][1:]  # the first line covers the warm-up steps
    steps = sum(1 for _ in steady)
    if not steps:
        raise SystemExit("no steady-state steps: raise --steps above --warmup")
    step_s = sum(r["step_s"] for r in steady) / steps
    return {"samples_per_s": cfg.trainer.batch_size / step_s, "step_s": step_s,
            "data_s": sum(r["data_s"] for r in steady) / steps}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("path", nargs="?", help="CALVIN-format dataset root (default: synthesise one)")
    ap.add_argument("--preset", default="tiny_llava", help="configs/model/<preset>.yaml")
    ap.add_argument("--tiny-size", nargs="*", default=[], help="TinySize overrides, e.g. hidden=128 vision_hidden=64")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--window", type=int, default=8)
    ap.add_argument("--chunk", type=int, default=10)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5, help="steps left out of the average (also the log interval)")
    ap.add_argument("--workers", type=int, default=1, help="DataLoader workers")
    ap.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: the shared 2-core test machine)")
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    if args.steps % args.warmup:
        ap.error("--steps must be a multiple of --warmup (the log interval)")
    torch.set_num_threads(args.threads)
    args.tiny_size = [kv.replace("=", ":") for kv in args.tiny_size]
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()

    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        root = Path(args.path) if args.path else Path(tmp) / "calvin"
        if args.path is None:
            t = time.perf_counter()
            synthesise(root)
            print(f"synthesised a CALVIN-layout dataset (2 episodes x 400 frames) in {time.perf_counter() - t:.1f} s")
        shards, resized = Path(tmp) / "shards", Path(tmp) / "resized"
        convert(root, shards, splits=["training"], progress=False)
        edge = int(dict(kv.split(":") for kv in args.tiny_size).get("image_size", TinySize.image_size))
        convert(root, resized, splits=["training"], resize={"rgb_static": edge}, progress=False)
        best: dict[str, dict[str, float]] = {}
        loaders = {"npz": ("npz", root), "shards": ("shards", shards), f"shards@{edge}": ("shards", resized)}
        for r in range(args.repeats):
            for name, (fmt, data) in loaders.items():
                out = Path(tmp) / f"run_{fmt}_{data.name}_{r}"
                result = measure(train_config(data, fmt, out, args), out)
                if name not in best or result["samples_per_s"] > best[name]["samples_per_s"]:
                    best[name] = result
    size = " ".join(args.tiny_size) or "default TinySize"
    print(f"\n{args.preset} ({size}), LSTM head, batch {args.batch}, window {args.window}, chunk {args.chunk}, "
          f"{args.precision} on {args.device}, {args.threads} thread(s), {args.workers} DataLoader worker(s); "
          f"{args.steps - args.warmup} steady steps, best of {args.repeats}")
    print(f"{'loader':<11}{'samples/s':>12}{'s/step':>10}{'data wait s/step':>18}{'vs npz':>9}")
    for name, res in best.items():
        ratio = res["samples_per_s"] / best["npz"]["samples_per_s"]
        print(f"{name:<11}{res['samples_per_s']:>12.2f}{res['step_s']:>10.3f}{res['data_s']:>18.3f}{ratio:>8.2f}x")


if __name__ == "__main__":
    main()
