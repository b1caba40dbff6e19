"""Training state for exact resume, saved beside the model in every checkpoint folder, never pickled.

    trainer_state.safetensors   the optimizer's tensors, keyed "optimizer/<parameter name>/<statistic>"
    trainer_state.json          step, data position, scheduler, GradScaler, every rank's RNG states
                                (python, numpy, torch CPU and CUDA), best metric, the training steps' CPU
                                seconds (all ranks) and wall seconds (trainer.max_cpu_s), the optimizer's param
                                groups (parameter names, hyper-parameters) and non-tensor statistics

The optimizer state is keyed by parameter name, not position, and checked against the optimizer it is
loaded into. Under FSDP it is gathered to full tensors on rank 0 and re-sharded on load
(`torch.distributed.checkpoint.state_dict`), so the file is the same whatever the strategy.
"""

from __future__ import annotations

import base64
import json
import random
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from harness.durable_files import atomic_write_text

STATE_JSON, STATE_TENSORS = "trainer_state.json", "trainer_state.safetensors"
RAW_WEIGHTS = "raw_weights.safetensors"  # trainer.ema_decay > 0: the trained weights; model.safetensors is their average
FORMAT = "vla-harness-trainer/1"
PREFIX = "model."  # SourceLosses holds the VLAModel as `model`


# ----------------------------------------------------------------------------------------- RNG
def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(s: str, dtype: Any) -> np.ndarray:
    return np.frombuffer(base64.b64decode(s), dtype=dtype).copy()


def rng_state() -> dict[str, Any]:
    """This process's python, numpy, torch and CUDA RNG states as JSON (the state arrays base64-encoded)."""
    version, keys, gauss = random.getstate()
    kind, np_keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, _b64(np.asarray(keys, dtype=np.uint32).tobytes()), gauss],
        "numpy": [kind, _b64(np.asarray(np_keys, dtype=np.uint32).tobytes()), int(pos), int(has_gauss), float(cached)],
        "torch": _b64(torch.get_rng_state().numpy().tobytes()),
        "cuda": [_b64(s.numpy().tobytes()) for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    version, keys, gauss = state["python"]
    random.setstate((version, tuple(int(k) for k in _unb64(keys, np.uint32)), gauss))
    kind, np_keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, _unb64(np_keys, np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch.from_numpy(_unb64(state["torch"], np.uint8)))
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.from_numpy(_unb64(s, np.uint8)) for s in state["cuda"]])


# ----------------------------------------------------------------------------------------- optimizer
def _strip(name: str) -> str:
    return name[len(PREFIX):] if name.startswith(PREFIX) else name


def optimizer_state(optimizer: torch.optim.Optimizer, wrapped: nn.Module, sharded: bool) -> dict[str, Any] | None:
    """{"state": {name: {stat: value}}, "param_groups": [{..., "params": [names]}]} (full tensors, CPU).

    Under FSDP every rank must call this (it gathers); rank 0 gets the state, the others None."""
    if sharded:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        full = get_optimizer_state_dict(wrapped, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if not full:
            return None
        groups = [{**{k: v for k, v in g.items() if k != "params"}, "params": [_strip(n) for n in g["params"]]}
                  for g in full["param_groups"]]
        return {"state": {_strip(k): v for k, v in full["state"].items()}, "param_groups": groups}
    sd = optimizer.state_dict()
    by_index = {i: n for g in sd["param_groups"] for i, n in zip(g["params"], g["names"])}
    groups = [{**{k: v for k, v in g.items() if k != "params"}, "params": list(g["names"])} for g in sd["param_groups"]]
    return {"state": {by_index[i]: s for i, s in sd["state"].items()}, "param_groups": groups}


def flatten_optimizer(named: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Named optimizer state -> (tensors for safetensors, JSON for the rest)."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for name, stats in named["state"].items():
        for stat, value in stats.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer/{name}/{stat}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(name, {})[stat] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in named["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def unflatten_optimizer(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> dict[str, Any]:
    state: dict[str, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer/"):
            name, _, stat = key[len("optimizer/"):].rpartition("/")
            state.setdefault(name, {})[stat] = value
    for name, stats in meta["scalars"].items():
        state.setdefault(name, {}).update(stats)
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


def load_optimizer_state(optimizer: torch.optim.Optimizer, wrapped: nn.Module, named: Mapping[str, Any],
                         sharded: bool, where: Path) -> None:
    """Load a named optimizer state (every rank, from the file) after checking its parameter names."""
    current = [list(g["names"]) for g in optimizer.param_groups]
    saved = [list(g["params"]) for g in named["param_groups"]]
    if current != saved:
        have, had = {n for g in current for n in g}, {n for g in saved for n in g}
        diff = sorted(have ^ had)[:8]
        raise ValueError(f"checkpoint {where}: the optimizer's parameters differ from this run's "
                         f"(model.finetune or the model changed?); first differences: {diff or 'group order'}")
    if sharded:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        full = {"state": {PREFIX + n: s for n, s in named["state"].items()},
                "param_groups": [{**g, "params": [PREFIX + n for n in g["params"]]} for g in named["param_groups"]]}
        # not strict: a parameter that never had a gradient has no state (AdamW creates it on first use); the
        # parameter names themselves were checked above
        set_optimizer_state_dict(wrapped, optimizer, full, options=StateDictOptions(full_state_dict=True, strict=False))
        return
    index = {n: i for g in optimizer.state_dict()["param_groups"] for i, n in zip(g["params"], g["names"])}
    sd = {"state": {index[n]: s for n, s in named["state"].items()},
          "param_groups": [{**g, "params": [index[n] for n in g["params"]]} for g in named["param_groups"]]}
    optimizer.load_state_dict(sd)


def full_weights(wrapped: nn.Module, names: list[str]) -> dict[str, torch.Tensor] | None:
    """FSDP: the full weights gathered on rank 0 (None elsewhere), keyed as `unique_state_dict(model)`."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(wrapped, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not full:
        return None
    full = {_strip(k): v for k, v in full.items()}
    return {n: full[n] for n in names}


# ----------------------------------------------------------------------------------------- files
def save_trainer_state(folder: Path, meta: dict[str, Any], optimizer: Mapping[str, Any]) -> None:
    """Write trainer_state.{safetensors,json}; `meta` holds everything but the optimizer."""
    tensors, optim_meta = flatten_optimizer(optimizer)
    save_file(tensors, str(folder / STATE_TENSORS), metadata={"format": FORMAT})
    (folder / STATE_JSON).write_text(json.dumps({"format": FORMAT, **meta, "optimizer": optim_meta}, indent=1) + "\n")


def save_raw_weights(folder: Path, weights: Mapping[str, torch.Tensor]) -> None:
    """Write the trainable parameters' raw values beside a model.safetensors that holds their average."""
    save_file(dict(weights), str(folder / RAW_WEIGHTS), metadata={"format": FORMAT})


@torch.no_grad()
def load_raw_weights(model: nn.Module, folder: Path, required: bool) -> None:
    """Resume: put a checkpoint's raw weights (if it kept a weight average) back into `model`'s trainable
    parameters. A run that keeps an average `required`s them; one that does not continues from the raw
    weights too, when the checkpoint has them (not from their average)."""
    path = folder / RAW_WEIGHTS
    if not path.is_file():
        if required:
            raise ValueError(f"checkpoint {folder}: no {RAW_WEIGHTS}, so its model.safetensors holds raw weights and "
                             "no weight average to go on with: trainer.ema_decay cannot be switched on when resuming "
                             "(start a new run, e.g. with init_from=...)")
        return
    try:
        raw = load_file(str(path))
    except Exception as err:  # safetensors' own error types for truncated files
        raise ValueError(f"checkpoint {folder}: cannot read {RAW_WEIGHTS}: {err}") from err
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    if set(raw) != set(params):
        missing, extra = sorted(set(params) - set(raw)), sorted(set(raw) - set(params))
        raise ValueError(f"checkpoint {folder}: {RAW_WEIGHTS} does not match the trained parameters (missing: "
                         f"{missing[:3]}, unexpected: {extra[:3]})")
    reshaped = [f"{n} {tuple(raw[n].shape)} vs {tuple(p.shape)}" for n, p in params.items() if raw[n].shape != p.shape]
    if reshaped:
        raise ValueError(f"checkpoint {folder}: {RAW_WEIGHTS} shape mismatch (file vs model): {reshaped[:3]}")
    for name, param in params.items():
        param.copy_(raw[name])


def record_best(folder: Path, best: Mapping[str, Any]) -> None:
    """Set the `best` record of a saved trainer state (the checkpoint became the best after it was written)."""
    path = folder / STATE_JSON
    meta = json.loads(path.read_text())
    meta["best"] = dict(best)
    atomic_write_text(path, json.dumps(meta, indent=1) + "\n")


def load_trainer_state(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(meta, named optimizer state) of a checkpoint folder; a ValueError if it has no trainer state."""
    json_path, tensor_path = folder / STATE_JSON, folder / STATE_TENSORS
    if not json_path.is_file() or not tensor_path.is_file():
        raise ValueError(f"checkpoint {folder}: no trainer state ({STATE_JSON}, {STATE_TENSORS}) to resume from; "
                         "use init_from=... to start a new run from its weights")
    try:
        meta = json.loads(json_path.read_text())
    except (OSError, ValueError) as e:  # truncated by a kill of an older release, or damaged
        raise ValueError(f"checkpoint {folder}: cannot read {STATE_JSON} ({e})") from None
    found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
    if found != FORMAT:
        raise ValueError(f"checkpoint {folder}: {STATE_JSON} has format {found!r}, expected {FORMAT!r}")
    try:
        tensors = load_file(str(tensor_path))
    except Exception as err:  # safetensors' own error types for truncated files
        raise ValueError(f"checkpoint {folder}: cannot read {STATE_TENSORS}: {err}") from err
    return meta, unflatten_optimizer(tensors, meta.pop("optimizer"))
