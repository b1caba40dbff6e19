"""The data config (hydra group `data`, configs/data/calvin.yaml) and the builders of window datasets.

What a window holds (frames, chunk, cameras, proprioception) is the model's (`VLAConfig.window_spec()`);
the data config says where the data is and how windows are drawn from it (`WindowOptions`).
`exclude_tasks` and `n_shot` select training segments only: validation keeps every task so that its
loss also measures the held-out ones. Augmentation is never applied to validation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from harness.data.calvin_format import STATISTICS, read_statistics, resolve_split_dir
from harness.data.normalization import ActionNormalizer
from harness.data.shards import ShardFrameSource, resolve_shard_dir
from harness.data.windows import FrameSource, NpzFrameSource, WindowDataset, WindowOptions, WindowSpec
from harness.strict_config import from_mapping, plain

FORMATS = ("npz", "shards")


@dataclass(frozen=True, kw_only=True)
class DataConfig(WindowOptions):
    path: str  # dataset root with training/ and validation/
    format: str = "npz"  # npz: CALVIN's per-frame files | shards: `python -m harness.data convert SRC DST`
    train_split: str = "training"
    val_split: str = "validation"
    # harness.data.normalization.ActionNormalizer, saved with every checkpoint: clip_scale | zscore (zscore
    # defaults to statistics.yaml's rel_actions mean/std, and maps +-3 std to the heads' [-1, 1])
    normalizer: dict[str, Any] = field(default_factory=lambda: {"mode": "clip_scale", "clip": 0.65})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.format not in FORMATS:
            raise ValueError(f"data.format must be 'npz' or 'shards', got {self.format!r}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "DataConfig":
        return from_mapping(cls, d, "data")

    def to_dict(self) -> dict[str, Any]:
        return plain(self)

    def split_name(self, train: bool) -> str:
        return self.train_split if train else self.val_split


def open_source(path: str | Path, split: str, fmt: str) -> FrameSource:
    return ShardFrameSource(path, split) if fmt == "shards" else NpzFrameSource(path, split)


def make_normalizer(cfg: DataConfig) -> ActionNormalizer:
    """The configured normaliser; z-score statistics default to the training split's statistics.yaml."""
    d = dict(cfg.normalizer)
    if d.get("mode") == "zscore" and ("mean" not in d or "std" not in d):
        stats_path = _train_folder(cfg) / STATISTICS
        mean, std = _rel_action_statistics(stats_path)
        d.setdefault("mean", mean)
        d.setdefault("std", std)
    return ActionNormalizer.from_dict(d)


def _rel_action_statistics(path: Path) -> tuple[list[float], list[float]]:
    """The arm's mean and std of relative actions from a statistics.yaml; any problem names the file."""
    needs = f"normalizer mode 'zscore' needs mean/std, or rel_actions statistics in {path}"
    if not path.is_file():
        raise ValueError(f"{needs} (no such file)")
    rel = read_statistics(path).get("rel_actions")
    try:
        mean, std = ([float(x) for x in rel[k][:6]] for k in ("mean", "std"))
    except (TypeError, KeyError, ValueError) as e:  # missing keys, non-lists, non-numbers
        raise ValueError(f"{needs}: rel_actions.mean and rel_actions.std must be lists of 6 numbers ({type(e).__name__}: {e})") from None
    if len(mean) != 6 or len(std) != 6:
        raise ValueError(f"{needs}: rel_actions.mean and rel_actions.std must have 6 numbers, got {len(mean)} and {len(std)}")
    if not all(math.isfinite(x) for x in mean + std) or min(std) <= 0:
        raise ValueError(f"{needs}: rel_actions.mean must be finite and rel_actions.std finite and > 0, got {mean} and {std}")
    return mean, std


def build_dataset(cfg: DataConfig, spec: WindowSpec, train: bool, normalizer: ActionNormalizer | None = None) -> WindowDataset:
    """Training (train=True) or validation windows of the shape `spec` (the model's `window_spec()`). Pass
    the checkpoint's normaliser at eval time."""
    source = open_source(cfg.path, cfg.split_name(train), cfg.format)
    if not train and cfg.val_split != cfg.train_split and _same_folder(source.name, cfg):
        raise ValueError(f"data.path {cfg.path} is a split folder, not a dataset root with '{cfg.train_split}' and "
                         f"'{cfg.val_split}' folders: validation would read the training frames; give the dataset root")
    return WindowDataset(source, spec, normalizer or make_normalizer(cfg), cfg if train else cfg.for_validation())


def _same_folder(validation: str, cfg: DataConfig) -> bool:
    """Whether the validation split resolved to the training split's folder: a split folder given as data.path
    stands for any split name."""
    return Path(validation).resolve() == _train_folder(cfg).resolve()


def _train_folder(cfg: DataConfig) -> Path:
    """The training split's folder: data.path's `train_split` folder, or data.path itself when it is a split."""
    resolve = resolve_shard_dir if cfg.format == "shards" else resolve_split_dir
    return resolve(cfg.path, cfg.train_split)
