"""The VL data config (hydra: configs/data/vl_sim.yaml, composed into `sources.vl.options` by configs/sources/)
and the builders of VL datasets and loaders. How much VL data a run mixes in, and its loss weight, are the
trainer's `sources.vl.ratio` and `sources.vl.weight`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from torch.utils.data import DataLoader

from harness.data.vl.llava import LlavaDataset, collate_vl
from harness.data.vl.mixing import EpochSampler
from harness.strict_config import from_mapping, plain


@dataclass(frozen=True)
class VLDataConfig:
    path: str  # folder of the LLaVA-style files (the sim VQA set: `python -m harness.data.vl generate`)
    train_file: str = "train.json"  # relative to `path`, or absolute
    val_file: str = "val.json"
    image_root: str | None = None  # images resolve against each JSON file's folder unless set
    image_size: int = 200  # users' images are padded to square and resized to this
    skip_text_only: bool = False  # entries without an image: error (false) or skipped (true)
    batch_size: int = 16
    num_workers: int = 0
    seed: int = 0  # the loader's shuffling

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.image_size < 1 or self.num_workers < 0:
            raise ValueError(f"vl: batch_size and image_size must be >= 1 and num_workers >= 0, got "
                             f"{self.batch_size}, {self.image_size}, {self.num_workers}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "sources.vl.options") -> "VLDataConfig":
        return from_mapping(cls, d, where)

    def to_dict(self) -> dict[str, Any]:
        return plain(self)

    def file(self, train: bool) -> Path:
        return Path(self.path) / (self.train_file if train else self.val_file)


def build_vl_dataset(cfg: VLDataConfig, train: bool) -> LlavaDataset:
    return LlavaDataset(cfg.file(train), cfg.image_root, cfg.image_size, cfg.skip_text_only)


def make_vl_loader(cfg: VLDataConfig, train: bool, rank: int = 0, world_size: int = 1,
                   dataset: LlavaDataset | None = None) -> DataLoader:
    """Batches of `collate_vl`; training shuffles per epoch with `EpochSampler` (resumable) and drops the
    last partial batch."""
    dataset = dataset or build_vl_dataset(cfg, train)
    sampler = EpochSampler(len(dataset), shuffle=train, seed=cfg.seed, rank=rank, world_size=world_size)
    return DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler, collate_fn=collate_vl,
                      num_workers=cfg.num_workers, drop_last=train, persistent_workers=cfg.num_workers > 0)
