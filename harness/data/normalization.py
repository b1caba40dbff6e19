"""Action normalisation: one configured, saved object used identically at train and eval time.

Default (RoboVLMs' CALVIN setting): the 6 arm dims of CALVIN's relative actions are clipped to
[-0.65, 0.65] and scaled to [-1, 1]; the gripper (-1 close / +1 open) becomes {0, 1} for the BCE loss.
`denormalize` is the exact inverse on the arm (within the clip range) and maps a gripper
probability/label back to +-1 by thresholding at 0.5. The object is saved as JSON next to every
checkpoint, so an agent always un-normalises with the statistics it was trained with.

`zscore`: (a - mean) / std, divided by ZSCORE_RANGE and clipped to [-1, 1]: the policy heads' arm outputs are
bounded to [-1, 1] (tanh, or the discrete bins), so plain z-scores beyond one std (about a third of the
values) could never be predicted.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

Mode = Literal["clip_scale", "zscore"]
ZSCORE_RANGE = 3.0  # std: the z-scores [-3, 3] map to the heads' [-1, 1]


@dataclass(frozen=True)
class ActionNormalizer:
    mode: Mode = "clip_scale"
    clip: float = 0.65  # clip_scale: arm dims clipped to [-clip, clip] then divided by clip
    mean: tuple[float, ...] = field(default_factory=lambda: (0.0,) * 6)  # zscore only
    std: tuple[float, ...] = field(default_factory=lambda: (1.0,) * 6)  # zscore only

    def __post_init__(self) -> None:
        if self.mode not in ("clip_scale", "zscore"):
            raise ValueError(f"ActionNormalizer.mode must be 'clip_scale' or 'zscore', got {self.mode!r}")
        if self.mode == "clip_scale" and not self.clip > 0:
            raise ValueError(f"ActionNormalizer.clip must be > 0, got {self.clip}")
        if len(self.mean) != 6 or len(self.std) != 6:
            raise ValueError("ActionNormalizer.mean/std must have 6 values (the arm dims)")
        if not np.all(np.isfinite([self.clip, *self.mean, *self.std])):  # NaN slips past every comparison
            raise ValueError(f"ActionNormalizer: clip, mean and std must be finite, got {self.clip}, {self.mean}, {self.std}")
        if self.mode == "zscore" and min(self.std) <= 0:
            raise ValueError(f"ActionNormalizer.std must be positive, got {self.std}")

    def normalize(self, rel_actions: np.ndarray) -> np.ndarray:
        """(..., 7) CALVIN relative actions -> (..., 7) float32: arm normalised, gripper in {0, 1}."""
        a = np.asarray(rel_actions, dtype=np.float32)
        if a.shape[-1] != 7:
            raise ValueError(f"expected actions with 7 values in the last axis, got shape {a.shape}")
        out = np.empty_like(a)
        if self.mode == "clip_scale":
            out[..., :6] = np.clip(a[..., :6], -self.clip, self.clip) / self.clip
        else:
            z = (a[..., :6] - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
            out[..., :6] = np.clip(z / ZSCORE_RANGE, -1.0, 1.0)
        out[..., 6] = (a[..., 6] > 0).astype(np.float32)
        return out

    def denormalize(self, normalized: np.ndarray) -> np.ndarray:
        """(..., 7) model outputs (arm normalised, gripper probability or {0,1}) -> env actions, gripper +-1."""
        a = np.asarray(normalized, dtype=np.float64)
        if a.shape[-1] != 7:
            raise ValueError(f"expected actions with 7 values in the last axis, got shape {a.shape}")
        out = np.empty_like(a)
        if self.mode == "clip_scale":
            out[..., :6] = np.clip(a[..., :6], -1.0, 1.0) * self.clip
        else:
            out[..., :6] = np.clip(a[..., :6], -1.0, 1.0) * ZSCORE_RANGE * np.asarray(self.std) + np.asarray(self.mean)
        out[..., 6] = np.where(a[..., 6] > 0.5, 1.0, -1.0)
        return out

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ActionNormalizer":
        unknown = set(d) - {"mode", "clip", "mean", "std"}
        if unknown:
            raise ValueError(f"unknown ActionNormalizer fields {sorted(unknown)}")
        kw = dict(d)
        for k in ("mean", "std"):
            if k in kw:
                kw[k] = tuple(float(x) for x in kw[k])
        return cls(**kw)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> "ActionNormalizer":
        """From a normalizer.json; a malformed file is a ValueError naming it."""
        try:
            d = json.loads(Path(path).read_text())
            if not isinstance(d, dict):
                raise ValueError(f"expected a JSON object, got {type(d).__name__}")
            return cls.from_dict(d)
        except (ValueError, TypeError) as e:  # json.JSONDecodeError is a ValueError
            raise ValueError(f"{path}: not a valid action normaliser ({e})") from None
