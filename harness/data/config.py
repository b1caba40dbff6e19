"""The data config (hydra group `data`, configs/data/calvin.yaml) and the builders of window datasets.

`exclude_tasks` and `n_shot` select training segments only: validation keeps every task so that its
loss also measures the held-out ones. Augmentation is never applied to validation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from harness.data.calvin_format import STATISTICS, read_statistics
from harness.data.normalization import ActionNormalizer
from harness.data.shards import ShardFrameSource
from harness.data.windows import FrameSource, NpzFrameSource, WindowConfig, WindowDataset


def strict_from_dict(cls: type, d: Mapping[str, Any], what: str) -> Any:
    """The dataclass `cls` from a flat mapping; unknown keys raise a ValueError naming them (`what`: the config)."""
    names = {f.name for f in fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise ValueError(f"unknown {what} keys {sorted(unknown)} (known: {sorted(names)})")
    return cls(**dict(d))


@dataclass(frozen=True)
class DataConfig:
    path: str
    format: str = "npz"  # "npz" (CALVIN's per-frame files) or "shards" (python -m harness.data convert)
    train_split: str = "training"
    val_split: str = "validation"
    window_size: int = 8
    fwd_pred_next_n: int = 10
    use_gripper_image: bool = False
    use_proprio: bool = True
    augment: bool = True  # training split only
    rgb_pad: int = 10
    gripper_pad: int = 4
    exclude_tasks: tuple[str, ...] = ()
    n_shot: int | None = None
    n_shot_seed: int = 0
    drop_short_segments: bool = False
    normalizer: Mapping[str, Any] = field(default_factory=lambda: {"mode": "clip_scale", "clip": 0.65})

    def __post_init__(self) -> None:
        if self.format not in ("npz", "shards"):
            raise ValueError(f"data.format must be 'npz' or 'shards', got {self.format!r}")
        object.__setattr__(self, "exclude_tasks", tuple(self.exclude_tasks))
        object.__setattr__(self, "normalizer", dict(self.normalizer))
        self.window_config(train=True)  # validates the window settings now, before any data is read

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "DataConfig":
        return strict_from_dict(cls, d, "data config")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["exclude_tasks"] = list(self.exclude_tasks)
        return d

    def window_config(self, train: bool) -> WindowConfig:
        return WindowConfig(
            window_size=self.window_size,
            fwd_pred_next_n=self.fwd_pred_next_n,
            use_gripper_image=self.use_gripper_image,
            use_proprio=self.use_proprio,
            augment=self.augment and train,
            rgb_pad=self.rgb_pad,
            gripper_pad=self.gripper_pad,
            exclude_tasks=self.exclude_tasks if train else (),
            n_shot=self.n_shot if train else None,
            n_shot_seed=self.n_shot_seed,
            drop_short_segments=self.drop_short_segments,
        )

    def split_name(self, train: bool) -> str:
        return self.train_split if train else self.val_split


def open_source(path: str | Path, split: str, fmt: str) -> FrameSource:
    return ShardFrameSource(path, split) if fmt == "shards" else NpzFrameSource(path, split)


def make_normalizer(cfg: DataConfig) -> ActionNormalizer:
    """The configured normaliser; z-score statistics default to the training split's statistics.yaml."""
    d = dict(cfg.normalizer)
    if d.get("mode") == "zscore" and ("mean" not in d or "std" not in d):
        stats_path = Path(cfg.path) / cfg.train_split / STATISTICS
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
    return mean, std


def build_dataset(cfg: DataConfig, train: bool, normalizer: ActionNormalizer | None = None) -> WindowDataset:
    """Training (train=True) or validation windows. Pass the checkpoint's normaliser at eval time."""
    source = open_source(cfg.path, cfg.split_name(train), cfg.format)
    return WindowDataset(source, cfg.window_config(train), normalizer or make_normalizer(cfg))
