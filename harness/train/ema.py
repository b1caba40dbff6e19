"""An exponential moving average of the trained weights (`trainer.ema_decay`; docs/TRAINING.md, "Weight
averaging").

A policy trained at a constant learning rate keeps moving: checkpoints a few thousand steps apart can differ
a lot in closed loop while their validation losses barely do. The average of the recent weights is the
usual remedy in behaviour cloning (diffusion_policy evaluates its EMA weights); here it is what a
checkpoint's model.safetensors holds, what validation and rollouts measure, and what an agent loads. The
optimizer keeps stepping the raw weights, which a checkpoint keeps beside it for resuming.

The decay warms up as (1 + n) / (10 + n) after n updates, capped at `decay`, so that the first updates are
not averaged with the random initialisation for thousands of steps.

    python -m harness.train.ema runs/train/x/checkpoints/step_0010000 runs/train/x/raw_0010000

writes a checkpoint folder holding the raw (not averaged) weights of a checkpoint saved with an average, to
evaluate the two side by side (`python -m harness.eval compare`).
"""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from agents.vla.checkpoint import read_weights_header
from agents.vla.layout import WEIGHTS
from harness.durable_files import TMP_GLOB
from harness.train.state import RAW_WEIGHTS, STATE_JSON, STATE_TENSORS


class WeightAverage:
    """The EMA of `model`'s trainable parameters (frozen ones never change, so they are not copied)."""

    def __init__(self, model: nn.Module, decay: float, updates: int = 0):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"trainer.ema_decay must be in (0, 1) (0 switches the average off), got {decay}")
        self.decay = decay
        self.updates = updates
        self.names, self.params = zip(*[(n, p) for n, p in model.named_parameters() if p.requires_grad])
        self.average = [p.detach().float().clone() for p in self.params]

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self) -> None:
        """Fold the parameters' current values in (after every optimizer step)."""
        self.updates += 1
        weight = 1.0 - self.current_decay()
        for average, param in zip(self.average, self.params):
            average.lerp_(param.detach().float(), weight)

    @contextmanager
    @torch.no_grad()
    def applied(self) -> Iterator[None]:
        """The model holds the averaged weights inside the block and its own ones again after it."""
        raw = [p.detach().clone() for p in self.params]
        for param, average in zip(self.params, self.average):
            param.copy_(average)
        try:
            yield
        finally:
            for param, value in zip(self.params, raw):
                param.copy_(value)

    def raw_weights(self) -> dict[str, torch.Tensor]:
        """The trainable parameters' own (not averaged) values, by name: what resuming needs besides the average."""
        return {name: p.detach().cpu().contiguous() for name, p in zip(self.names, self.params)}


def export_raw(checkpoint: Path, out: Path) -> Path:
    """A copy of `checkpoint` (saved with a weight average) whose model.safetensors holds the raw weights; without
    the trainer state, so that it evaluates but does not resume."""
    raw_path = checkpoint / RAW_WEIGHTS
    if not raw_path.is_file():
        raise ValueError(f"checkpoint {checkpoint}: no {RAW_WEIGHTS} (saved without trainer.ema_decay: its "
                         f"{WEIGHTS} already holds the raw weights)")
    if out.exists():
        raise ValueError(f"{out} exists: choose a new folder")
    metadata, _ = read_weights_header(checkpoint)
    weights, raw = load_file(str(checkpoint / WEIGHTS)), load_file(str(raw_path))
    unknown = sorted(set(raw) - set(weights))
    if unknown:
        raise ValueError(f"checkpoint {checkpoint}: {RAW_WEIGHTS} has weights {WEIGHTS} lacks: {unknown[:3]}")
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(checkpoint, partial, ignore=shutil.ignore_patterns(RAW_WEIGHTS, STATE_JSON, STATE_TENSORS, TMP_GLOB))
    save_file({**weights, **raw}, str(partial / WEIGHTS), metadata=metadata)
    partial.rename(out)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m harness.train.ema", description=export_raw.__doc__)
    ap.add_argument("checkpoint", type=Path, help="a checkpoint folder saved with trainer.ema_decay > 0")
    ap.add_argument("out", type=Path, help="the new checkpoint folder (must not exist)")
    args = ap.parse_args(argv)
    try:
        print(export_raw(args.checkpoint, args.out))
    except ValueError as err:
        ap.exit(2, f"python -m harness.train.ema: {err}\n")


if __name__ == "__main__":
    main()
