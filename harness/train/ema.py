"""An exponential moving average of the trained weights (`trainer.ema_decay`; docs/TRAINING.md, "Weight
averaging").

A policy trained at a constant learning rate keeps moving: checkpoints a few thousand steps apart can differ
a lot in closed loop while their validation losses barely do. The average of the recent weights is the
usual remedy in behaviour cloning (diffusion_policy evaluates its EMA weights); here it is what a
checkpoint's model.safetensors holds, what validation and rollouts measure, and what an agent loads. The
optimizer keeps stepping the raw weights, which a checkpoint keeps beside it for resuming.

The decay warms up as (1 + n) / (10 + n) after n updates, capped at `decay`, so that the first updates are
not averaged with the random initialisation for thousands of steps.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


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
