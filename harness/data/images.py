"""Resizing camera frames: one function for the models' image processors and for shard conversion.

Shards can store images already at a model's input size (`python -m harness.data convert --resize`), which
keeps recordings small and spares the training process a resize per frame. That is only the same as
resizing at training time if both resize identically, so the VLA backbones (`agents/vla/backbones.py`)
call this function too: frames stored at the model's input size are then exactly what the model would
have made of the full frames, and an agent that resizes the env's full frames sees what it was trained on.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

RESIZE_MODES = ("nearest", "bilinear", "bicubic")


def resize_frames(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> (N, 3, h, w) with antialiasing (nearest: none).

    On CPU uint8 in, uint8 out (rounded and clipped like PIL, and ~7x faster than through float); on
    other devices the result is float, clamped to [0, 255]."""
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize mode must be one of {RESIZE_MODES}, got {mode!r}")
    if mode == "nearest":
        return F.interpolate(x, size=size, mode=mode)
    if x.device.type == "cpu":
        return F.interpolate(x, size=size, mode=mode, antialias=True, align_corners=False)
    return F.interpolate(x.float(), size=size, mode=mode, antialias=True, align_corners=False).clamp(0, 255)


def resize_hwc(frames: np.ndarray, edge: int, mode: str) -> np.ndarray:
    """uint8 (N, H, W, 3) or (H, W, 3) frames -> square `edge` x `edge` frames, the same layout."""
    single = frames.ndim == 3
    x = torch.from_numpy(np.ascontiguousarray(frames[None] if single else frames)).permute(0, 3, 1, 2)
    out = resize_frames(x, (edge, edge), mode).permute(0, 2, 3, 1).contiguous().numpy()
    return out[0] if single else out


__all__ = ["RESIZE_MODES", "resize_frames", "resize_hwc"]
