"""Named batch sources: which stream serves each source of the config, and how each kind of batch makes a loss.

The trainer consumes one `BatchStream` (harness/train/streams.py), which yields `(source name, batch)` pairs
and can save and restore its position (JSON). The loss of a pair is dispatched on the source name through
`LOSSES`:

    action -> model(batch)                                       (docs/ARCHITECTURE.md's training batch)
    vl     -> model.vl_loss(batch["images"], batch["prompts"], batch["answers"])   (co-training)

`sources.action` alone trains on `ActionStream`; `sources.vl` is harness/train/cotraining.py's `VLStream`,
and several sources (stage 2 + vision-language co-training) are mixed by its `MixedStream`; the source's
`ratio` and `options` in the config are theirs to read, its `weight` scales its loss here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.data import Dataset

from harness.ranks import DistInfo
from harness.train.config import TrainConfig
from harness.train.cotraining import MixedStream, build_vl_stream, check_vl_source
from harness.train.streams import ActionStream, BatchStream

Batch = Any


# ----------------------------------------------------------------------------------------- losses
@dataclass(frozen=True)
class SourceLoss:
    """How a batch of one source becomes a loss.

    loss(model, batch) -> {"loss": scalar tensor, other scalar tensors to log}: a mean over the batch's items;
    count(batch) -> how many items that mean is over, so micro-batches and ranks combine into the mean
    over the whole global batch (not a mean of means)."""

    loss: Callable[[nn.Module, Batch], dict[str, torch.Tensor]]
    count: Callable[[Batch], int]


def _action_loss(model: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
    return model(batch)


def _action_count(batch: Batch) -> int:
    return int(batch["action_mask"].sum())  # the action losses are means over unmasked (frame, step)s


def _vl_loss(model: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
    images = batch["images"]
    images = [images] if isinstance(images, torch.Tensor) else list(images)  # one camera, or one tensor per image slot
    return {"loss": model.vl_loss(images, list(batch["prompts"]), list(batch["answers"]))}


def _vl_count(batch: Batch) -> int:
    # vl_loss averages over answer tokens; counting samples weighs micro-batches by samples (a mixer can
    # register a token count instead)
    return len(batch["prompts"])


LOSSES: dict[str, SourceLoss] = {"action": SourceLoss(_action_loss, _action_count), "vl": SourceLoss(_vl_loss, _vl_count)}


class SourceLosses(nn.Module):
    """The model behind one `forward(source, batch)` for every source.

    DDP and FSDP act on forward calls: wrapping this module (not the VLAModel) makes a vision-language
    batch's `vl_loss` a forward too, so its gradients are synchronised like the action loss's."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, source: str, batch: Batch) -> dict[str, torch.Tensor]:
        return LOSSES[source].loss(self.model, batch)


# ----------------------------------------------------------------------------------------- sources
def check_sources(cfg: TrainConfig) -> None:
    """The sources of the stage, each known and with its settings valid (before any data is read)."""
    names = set(cfg.sources)
    if cfg.stage == 1 and names != {"vl"}:
        raise ValueError(f"stage 1 trains on vision-language data only: sources must be just `vl`, got {sorted(names)}")
    if cfg.stage == 2 and "action" not in names:
        raise ValueError(f"stage 2 trains on actions: sources must include `action`, got {sorted(names)}")
    for name in sorted(names - set(LOSSES)):
        raise ValueError(f"sources.{name}: no loss for this source; known: {sorted(LOSSES)}")
    if "vl" in names:
        check_vl_source(cfg)
    idle = sorted(n for n in names if cfg.sources[n].ratio == 0)
    if len(names) > 1 and idle:
        raise ValueError(f"sources {idle}: ratio 0 in a mix; remove the source instead (sources=action: no co-training)")


def source_fractions(cfg: TrainConfig) -> dict[str, float]:
    """Each source's share of the micro-batches: its ratio, normalised (1 for a single source)."""
    if len(cfg.sources) == 1:
        return {name: 1.0 for name in cfg.sources}
    total = sum(s.ratio for s in cfg.sources.values())  # check_sources refuses a ratio of 0 in a mix
    return {name: s.ratio / total for name, s in cfg.sources.items()}


def build_stream(cfg: TrainConfig, dist: DistInfo, batch_size: int, action_data: Dataset | None,
                 pin_memory: bool = False) -> BatchStream:
    """The configured sources as one stream (each source's own stream when there is only one)."""
    streams: dict[str, BatchStream] = {}
    for name in cfg.sources:
        if name == "action":
            assert action_data is not None
            streams[name] = ActionStream(action_data, batch_size, dist, cfg.trainer.seed, cfg.trainer.num_workers,
                                         pin_memory)
        else:
            streams[name] = build_vl_stream(cfg, dist, batch_size)
    if len(streams) == 1:
        return next(iter(streams.values()))
    return MixedStream(streams, {n: s.ratio for n, s in cfg.sources.items()}, cfg.trainer.seed)
