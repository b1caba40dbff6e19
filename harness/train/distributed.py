"""Ranks for training: the process group from torchrun's environment, DDP or FSDP wrapping, collectives.

No world size is written anywhere: `torchrun --nproc_per_node N [--nnodes M ...] -m harness.train` sets
RANK / WORLD_SIZE / LOCAL_RANK, and a plain `python -m harness.train` is a world of one (no process
group, no wrapper). The backend is NCCL when training on CUDA and gloo on CPU.

* DDP: the parameters the loss never reaches are frozen first (`freeze_unreached`), because DDP waits
  for a gradient of every trainable parameter; with several batch sources (whose losses reach different
  parameters) `find_unused_parameters` is used instead.
* FSDP (`trainer.strategy=fsdp`): torch's `fully_shard` on every decoder layer, the vision tower,
  the projector and the head, then on the whole; parameters, gradients and optimizer state are sharded.
  Checkpoints gather the full weights on rank 0 (`torch.distributed.checkpoint.state_dict`).

Rank 0 alone logs, saves and runs rollouts. Objects travel between ranks as JSON in uint8 tensors, so
nothing is pickled.
"""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as tdist
from torch import nn

from harness.ranks import DistInfo, comm_device, dist_from_env, init_distributed, json_tensor


def setup(device: str, timeout_s: float) -> DistInfo:
    """Join torchrun's process group (if launched by it): NCCL for CUDA training, gloo for CPU."""
    info = dist_from_env()
    backend = "nccl" if device == "cuda" else "gloo"
    return init_distributed(info, backend, timeout_s)


def wrap(module: nn.Module, dist: DistInfo, strategy: str, device: torch.device, find_unused: bool) -> nn.Module:
    """`module` (SourceLosses) as the ranks train it: itself (one process), DDP, or fully sharded."""
    if strategy == "fsdp":
        if dist.active:
            shard(module, device)
        return module
    if not dist.active:
        return module
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [device.index] if device.type == "cuda" else None
    # the VLA's buffers are constants (token ids, rotary tables): no broadcast before every forward
    return DDP(module, device_ids=ids, find_unused_parameters=find_unused, broadcast_buffers=False)


def for_evaluation(module: nn.Module) -> nn.Module:
    """What validation runs: DDP's inner module (no collectives, so ranks may run different numbers of
    batches); a fully sharded module itself (its forward gathers the shards: every rank must call it)."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    return module.module if isinstance(module, DDP) else module


def shard(module: nn.Module, device: torch.device) -> None:
    """fully_shard the VLA's repeated blocks (decoder layers, vision encoder layers, head blocks) and its
    projector/head, then the root (which holds the rest: embeddings, norms, proprio). Shards go to `device`."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (tdist.get_world_size(),))
    vla = module.model
    for unit in shard_units([*vla.backbone.vision_modules, vla.backbone.language_model, vla.head]):
        fully_shard(unit, mesh=mesh)
    fully_shard(module, mesh=mesh)


def shard_units(parts: list[nn.Module]) -> list[nn.Module]:
    """The blocks of each part's outermost ModuleLists, or the part itself if it has none.

    Never a transformers PreTrainedModel: transformers finds the hooks that collect hidden states by the
    model's class, and fully_shard replaces that class (LLaVA would lose its vision features)."""
    from transformers import PreTrainedModel

    units: list[nn.Module] = []
    for part in parts:
        blocks = _outer_blocks(part)
        if blocks:
            units += blocks
        elif not isinstance(part, PreTrainedModel) and any(True for _ in part.parameters()):
            units.append(part)
    return units


def _outer_blocks(module: nn.Module) -> list[nn.Module]:
    if isinstance(module, nn.ModuleList):
        return [m for m in module if any(True for _ in m.parameters())]
    return [b for child in module.children() for b in _outer_blocks(child)]


def is_sharded(module: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule)


@contextmanager
def no_grad_sync(module: nn.Module, skip: bool) -> Iterator[None]:
    """Within a gradient-accumulation group, synchronise gradients on the last micro-batch only."""
    if not skip:
        yield
    elif hasattr(module, "no_sync"):  # DDP
        with module.no_sync():
            yield
    elif is_sharded(module):
        module.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            module.set_requires_gradient_sync(True)
    else:
        yield


def all_reduce_sum(values: torch.Tensor, dist: DistInfo) -> torch.Tensor:
    """Sum over ranks (a no-op in one process); returns a float64 CPU tensor."""
    if not dist.active:
        return values.detach().double().cpu()
    t = values.detach().double().to(comm_device(dist))
    tdist.all_reduce(t)
    return t.cpu()


def gather_json(obj: Any, dist: DistInfo) -> list[Any]:
    """Every rank's JSON-able `obj`, in rank order, on every rank."""
    if not dist.active:
        return [obj]
    device = comm_device(dist)
    data = json_tensor(obj, device)
    sizes = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(dist.world_size)]
    tdist.all_gather(sizes, torch.tensor([data.numel()], dtype=torch.long, device=device))
    longest = int(max(int(s) for s in sizes))
    padded = torch.zeros(longest, dtype=torch.uint8, device=device)
    padded[: data.numel()] = data
    chunks = [torch.empty(longest, dtype=torch.uint8, device=device) for _ in range(dist.world_size)]
    tdist.all_gather(chunks, padded)
    return [json.loads(bytes(c[: int(s)].cpu().tolist()).decode()) for c, s in zip(chunks, sizes)]


def fingerprint(module: nn.Module) -> str:
    """A digest of the parameters (per-parameter float64 sum and sum of squares, computed where they are):
    equal on two ranks iff they hold the same weights, for all practical purposes; cheap on any device."""
    with torch.no_grad():
        stats = [torch.stack([p.detach().double().sum(), p.detach().double().square().sum()]) for p in module.parameters()]
        values = torch.stack(stats).cpu().numpy() if stats else np.zeros(0)
    return hashlib.sha256(values.tobytes()).hexdigest()


@contextmanager
def hide_ranks() -> Iterator[None]:
    """Run code that checks torchrun's variables (harness.eval) as a single process, on one rank.

    The rollout callback evaluates on rank 0 only; the evaluation would otherwise see RANK/WORLD_SIZE, try
    to join the ranks in its barriers and shut the process group down."""
    keys = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")
    saved = {k: os.environ.pop(k) for k in keys if k in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def rank_fingerprints(module: nn.Module, dist: DistInfo, sharded: bool) -> list[str] | None:
    """Every rank's `fingerprint` (replicated parameters only: None under FSDP or in one process)."""
    if not dist.active or sharded:
        return None
    return gather_json(fingerprint(module), dist)
