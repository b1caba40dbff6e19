"""Checkpoint folders (agents/vla/layout.py, docs/ARCHITECTURE.md): save, and load with validation. Loading never
unpickles, and never runs code found in the folder (`trust_remote_code=False` wherever transformers loads from it).

A checkpoint that does not match what its config builds fails with a ValueError that names the mismatch:
missing files, missing/unexpected/reshaped weights, a different head/history/backbone, different
normalisation, a different tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from harness.data.normalization import ActionNormalizer

from .backbones import backbone_from_folders
from .config import VLAConfig
from .finetune import apply_finetune
from .layout import CONFIG, FORMAT, NORMALIZER, REQUIRED, WEIGHTS
from .model import VLAModel


@dataclass
class Checkpoint:
    model: VLAModel
    normalizer: ActionNormalizer
    config: dict[str, Any]  # the whole config.yaml
    path: Path


def _metadata(model: VLAModel) -> dict[str, str]:
    cfg = model.cfg
    return {
        "format": FORMAT, "family": cfg.backbone.family, "head": cfg.head.type, "history": cfg.history,
        "finetune": cfg.finetune.mode, "lrn_id": str(model.lrn_id), "proprio_id": str(model.proprio_id),
        "action_token_ids": ",".join(map(str, model.action_token_ids.tolist())),
    }


def unique_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """state_dict with tensors that share storage (tied weights) kept once, under their first name."""
    out, seen = {}, set()
    for name, t in model.state_dict().items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
        if key not in seen:
            seen.add(key)
            out[name] = t
    return out


def save_checkpoint(path: str | Path, model: VLAModel, normalizer: ActionNormalizer,
                    extra_config: dict[str, Any] | None = None,
                    state_dict: dict[str, torch.Tensor] | None = None) -> Path:
    """Write the checkpoint folder; `extra_config` (e.g. the resolved data/train config) joins config.yaml.

    `state_dict`: the weights to write instead of the model's own, keyed as `unique_state_dict(model)`
    (a trainer passes the full weights gathered from FSDP shards)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    weights = unique_state_dict(model) if state_dict is None else state_dict
    tensors = {k: v.detach().contiguous().cpu() for k, v in weights.items()}
    save_file(tensors, str(path / WEIGHTS), metadata=_metadata(model))
    config = {"model": model.cfg.to_dict(), "normalizer": normalizer.to_dict(), **(extra_config or {})}
    (path / CONFIG).write_text(yaml.safe_dump(config, sort_keys=False))
    normalizer.save(path / NORMALIZER)
    model.backbone.tokenizer.save_pretrained(str(path / "tokenizer"))
    model.backbone.processor.save_pretrained(str(path / "processor"))
    model.vlm.config.save_pretrained(str(path / "backbone"))
    return path


def _fail(path: Path, what: str) -> ValueError:
    return ValueError(f"checkpoint {path}: {what}")


def _listing(names: list[str], limit: int = 8) -> str:
    more = f" (+{len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


@dataclass
class CheckpointFiles:
    """What a checkpoint folder says before anything is built from it."""

    cfg: VLAConfig
    normalizer: ActionNormalizer
    config: dict[str, Any]  # the whole config.yaml
    metadata: dict[str, str]  # model.safetensors' header metadata


def inspect_checkpoint(path: str | Path) -> CheckpointFiles:
    """Read and check the folder's files without building the model or reading the weights: every file
    there, config.yaml, normalizer.json and the weights' header parse and agree. Any problem is a
    ValueError naming the folder and the file."""
    path = Path(path)
    if not path.is_dir():
        raise _fail(path, "is not a folder")
    missing_files = [f for f in REQUIRED if not (path / f).exists()]
    if missing_files:
        raise _fail(path, f"missing {', '.join(missing_files)}")
    try:
        config = yaml.safe_load((path / CONFIG).read_text())
    except yaml.YAMLError as e:
        raise _fail(path, f"{CONFIG} is not valid YAML ({' '.join(str(e).split())})") from None
    if not isinstance(config, dict) or "model" not in config:
        raise _fail(path, f"{CONFIG} has no 'model' section")
    try:
        cfg = VLAConfig.from_dict(config["model"])
    except (ValueError, TypeError) as e:
        raise _fail(path, f"{CONFIG}: {e}") from None
    normalizer = ActionNormalizer.load(path / NORMALIZER)
    if "normalizer" in config:
        try:
            recorded = ActionNormalizer.from_dict(config["normalizer"])
        except (ValueError, TypeError) as e:
            raise _fail(path, f"{CONFIG}: normalizer: {e}") from None
        if recorded != normalizer:
            raise _fail(path, f"different normalisation: {NORMALIZER} holds {normalizer.to_dict()} but the "
                              f"model was trained with {recorded.to_dict()} ({CONFIG}: normalizer)")

    meta, _ = read_weights_header(path)
    for key, want in (("format", FORMAT), ("family", cfg.backbone.family), ("head", cfg.head.type),
                      ("history", cfg.history), ("finetune", cfg.finetune.mode)):
        if meta.get(key) != want:
            raise _fail(path, f"different {key}: the weights in {WEIGHTS} were saved with {key}={meta.get(key)!r} "
                              f"but {CONFIG} says {want!r}")
    return CheckpointFiles(cfg, normalizer, config, meta)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu",
                    dtype: torch.dtype | None = None) -> Checkpoint:
    """Rebuild the model from the folder alone and load its weights, after checking that they match. A link
    (a run's `checkpoints/last`) is resolved once, first: training may move it on while the files are read.
    The model is in one dtype, `dtype`, or float32 without one: a backbone trained in bf16 (backbone.dtype) beside
    fp32 heads runs only under autocast, as in training, and the tools that read a checkpoint run without it."""
    path = Path(path).resolve()
    files = inspect_checkpoint(path)
    cfg, meta = files.cfg, files.metadata
    built = cfg.backbone if dtype is not None else replace(cfg.backbone, dtype="float32")  # no double rounding
    try:
        backbone = backbone_from_folders(built, str(path / "backbone"), str(path / "processor"))
    except (OSError, ValueError, TypeError, KeyError) as e:  # a missing, truncated or damaged config/tokenizer file
        raise _fail(path, f"cannot rebuild the backbone from backbone/ and processor/ "
                          f"({type(e).__name__}: {' '.join(str(e).split())[:500]})") from e
    model = VLAModel(cfg, backbone)
    apply_finetune(model, cfg.finetune)  # same structure (LoRA layers) and trainable flags as when saved
    for key in ("lrn_id", "proprio_id", "action_token_ids"):
        if meta.get(key) != _metadata(model)[key]:
            raise _fail(path, f"tokenizer mismatch: {key} is {_metadata(model)[key]!r} with processor/ but the "
                              f"weights were trained with {meta.get(key)!r}")
    _check_tokenizer(path, model)
    load_weights(model, path, f"the model built from {CONFIG}")
    model.to(device=device, dtype=dtype or torch.float32)
    model.eval()
    return Checkpoint(model, files.normalizer, files.config, path)


def read_weights_header(path: str | Path) -> tuple[dict[str, str], dict[str, tuple[int, ...]]]:
    """(metadata, {key: shape}) of the checkpoint folder's model.safetensors, without reading the tensors."""
    path = Path(path)
    try:
        with safe_open(str(path / WEIGHTS), framework="pt") as f:
            return f.metadata() or {}, {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as err:  # safetensors raises its own error types for truncated/garbled files
        raise _fail(path, f"cannot read {WEIGHTS} (corrupted or not safetensors): {err}") from err


def load_weights(model: torch.nn.Module, path: str | Path, target: str = "the model", fresh: tuple[str, ...] = ()) -> None:
    """Load the folder's model.safetensors into `model` after checking that every key and shape matches
    `unique_state_dict(model)` (tied tensors are stored once); a mismatch is a ValueError naming it. Keys
    under the `fresh` prefixes may be absent from the file: those parameters keep their initialisation."""
    path = Path(path)
    _, shapes = read_weights_header(path)
    expected = {k: tuple(v.shape) for k, v in unique_state_dict(model).items()}
    missing = sorted(k for k in set(expected) - set(shapes) if not (fresh and k.startswith(fresh)))
    unexpected = sorted(set(shapes) - set(expected))
    reshaped = sorted(f"{k} {shapes[k]} vs {expected[k]}" for k in set(expected) & set(shapes) if shapes[k] != expected[k])
    problems = []
    if missing:
        problems.append(f"missing keys: {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_listing(unexpected)}")
    if reshaped:
        problems.append(f"shape mismatch (file vs model): {_listing(reshaped)}")
    if problems:
        raise _fail(path, f"weights do not match {target}: " + "; ".join(problems))

    result = model.load_state_dict(load_file(str(path / WEIGHTS)), strict=False)
    not_loaded = [k for k in result.missing_keys if k in expected and not (fresh and k.startswith(fresh))]
    if not_loaded:  # the others are aliases of tensors stored once
        raise _fail(path, f"weights not loaded: {_listing(not_loaded)}")


def _check_tokenizer(path: Path, model: VLAModel) -> None:
    from transformers import AutoTokenizer

    saved = AutoTokenizer.from_pretrained(str(path / "tokenizer"), trust_remote_code=False)
    if saved.get_vocab() != model.backbone.tokenizer.get_vocab():
        raise _fail(path, f"tokenizer mismatch: tokenizer/ has {len(saved)} tokens, processor/ {len(model.backbone.tokenizer)}")
