"""`check_config`: everything that can be wrong with a training config without reading data or building the
model, found before any work (the trainer calls it first; every problem is a ValueError naming the setting).

The window-vs-segment check reads the annotations only and happens when the datasets are opened, which the
trainer does before it builds the model.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from agents.vla.backbones import adapter_class
from agents.vla.tiny import TINY_PRESETS
from harness.train.config import STAGES, TrainConfig, resolve_device
from harness.train.sources import check_sources


def check_config(cfg: TrainConfig) -> None:
    """Everything that can be wrong without reading data or building the model: a ValueError naming it."""
    # the model: family and preset known, a local backbone folder present
    bb = cfg.model.backbone
    adapter_class(bb.family).check_config(cfg.model)  # what the family cannot do (e.g. the non-VLM baseline's)
    if bb.tiny is not None and bb.tiny not in TINY_PRESETS:
        raise ValueError(f"model.backbone.tiny: unknown tiny preset {bb.tiny!r}; known: {sorted(TINY_PRESETS)}")
    if bb.tiny is not None and TINY_PRESETS[bb.tiny].family != bb.family:
        raise ValueError(f"model.backbone: tiny preset {bb.tiny!r} is a {TINY_PRESETS[bb.tiny].family!r} model, "
                         f"but family is {bb.family!r}")
    if bb.pretrained is not None and _looks_local(bb.pretrained) and not Path(bb.pretrained).is_dir():
        raise ValueError(f"model.backbone.pretrained: folder {bb.pretrained} does not exist")

    # the data: present (its windows are the model's: window_spec)
    if not Path(cfg.data.path).is_dir():
        raise ValueError(f"data.path: dataset folder {cfg.data.path} does not exist (set data.path=... or the "
                         "CALVIN_DATASET environment variable)")

    # precision and device
    device = resolve_device(cfg.trainer)
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("trainer.device=cuda but CUDA is not available (use trainer.device=cpu or auto)")
    if cfg.trainer.precision == "fp16" and device != "cuda":
        raise ValueError("trainer.precision=fp16 needs a GPU (its GradScaler is CUDA-only); use bf16 or fp32 on CPU")
    if cfg.trainer.precision == "bf16" and device == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError("trainer.precision=bf16: this GPU does not support bfloat16; use fp16")
    if cfg.trainer.precision == "bf16" and device == "cpu" and cpu_bf16_is_emulated():
        warnings.warn("trainer.precision=bf16 on a CPU without native bfloat16 (no avx512_bf16 or amx_bf16 in "
                      "/proc/cpuinfo): autocast emulates it, measured 12x slower than fp32 for the e2e_full_cpu recipe "
                      "on an AVX2-only CPU; set trainer.precision=fp32 (docs/TRAINING.md)", stacklevel=2)
    if cfg.trainer.precision == "fp16" and bb.dtype == "float16" and cfg.model.finetune.mode != "frozen":
        raise ValueError("trainer.precision=fp16 with model.backbone.dtype=float16: GradScaler cannot unscale fp16 "
                         "gradients of trainable weights; load the backbone in float32 (autocast runs it in fp16)")

    # the rest
    if cfg.stage not in STAGES:
        raise ValueError(f"stage must be 1 (vision-language only) or 2 (actions), got {cfg.stage!r}")
    check_sources(cfg)
    if cfg.trainer.best_metric == "val_loss" and "action" not in cfg.sources:  # no validation windows: never a best
        raise ValueError("trainer.best_metric=val_loss needs the action source's validation windows; with sources=vl "
                         "set trainer.best_metric=vqa_accuracy (as +experiment=vl_stage1 does)")
    if cfg.trainer.best_metric == "vqa_accuracy" and "vl" not in cfg.sources:
        raise ValueError("trainer.best_metric=vqa_accuracy needs a vision-language source (sources=vl or action_vl)")
    if cfg.trainer.best_metric == "rollout_success" and not cfg.rollout.enabled:
        raise ValueError("trainer.best_metric=rollout_success needs rollouts (rollout=single_task or rollout=chains)")
    if cfg.rollout.enabled:
        if cfg.trainer.strategy == "fsdp" and cfg.rollout.every % cfg.trainer.ckpt_every:
            raise ValueError(f"with trainer.strategy=fsdp rollouts load the step's checkpoint: rollout.every="
                             f"{cfg.rollout.every} must be a multiple of trainer.ckpt_every={cfg.trainer.ckpt_every}")
        cfg.rollout.settings.jobs()  # unknown task names, impossible tasks (the env's names: EnvConfig checks them)
    if cfg.init_from is not None and not Path(cfg.init_from).is_dir():
        raise ValueError(f"init_from: checkpoint folder {cfg.init_from} does not exist")
    if cfg.resume not in ("auto", "never") and not Path(cfg.resume).is_dir():
        raise ValueError(f"resume: expected auto, never or a checkpoint folder; {cfg.resume} is none of them")


def _looks_local(name: str) -> bool:
    """A folder rather than a hub id ("org/name"): absolute, relative with ./ or ../, or ~."""
    return name.startswith(("/", "./", "../", "~")) or Path(name).exists()


def check_stored_image_sizes(source: Any, backbone: Any, cameras: tuple[str, ...]) -> None:
    """Shards converted with --resize must hold the images at the model's input size: stored at another, the
    training resizes them a second time while the evaluation resizes the env's frames once (other pixels)."""
    manifest = getattr(source, "manifest", None) or {}
    for key, how in (manifest.get("resized") or {}).items():
        if key.removeprefix("rgb_") not in cameras:
            continue
        full = how["from"]
        (h, w), _ = backbone.target_size(int(full[0]), int(full[1]))
        stored = tuple(manifest["keys"][key]["shape"][:2])
        if stored != (h, w):
            raise ValueError(f"data.path: {key} is stored at {stored[0]}x{stored[1]} px (converted with --resize), but the "
                             f"model's backbone takes {h}x{w}: training would resize it again, the evaluation once from "
                             f"the env's {full[0]}x{full[1]}; convert with --resize {key}={h}")


def cpu_bf16_is_emulated(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether this x86 CPU lacks native bfloat16 arithmetic (AVX-512 BF16 or AMX): bf16 autocast then runs
    emulated, several times slower than fp32. False where /proc/cpuinfo cannot say (another OS or CPU)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), None)
    return flags is not None and "avx2" in flags and not {"avx512_bf16", "amx_bf16"} & set(flags)
