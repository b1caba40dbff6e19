"""Ranks under torchrun: who am I, a barrier, and the process group, with no world size written anywhere.
Shared by the evaluation and the training (whose DDP/FSDP parts are harness/train/distributed.py).

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE (and MASTER_ADDR/PORT). Each rank takes
its share of the pending jobs (`pending[rank::world_size]`) and appends to its own results log; the files
in the shared output folder are the data exchanged; the process group synchronises, and carries small JSON values
from rank 0 (`broadcast_json`: e.g. the checkpoint folder a link named when the evaluation began). So the
ranks may be on several nodes as long as they share the output folder, and a run may be resumed with a
different number of ranks or none.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Sequence, TypeVar

if TYPE_CHECKING:
    import torch

T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    backend: str | None = None  # set once the process group is up

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, items: Sequence[T]) -> list[T]:
        return list(items[self.rank :: self.world_size])


def dist_from_env() -> DistInfo:
    """The rank layout torchrun announces through the environment (a single process otherwise)."""
    env = os.environ
    if "RANK" not in env or "WORLD_SIZE" not in env:
        return DistInfo()
    world = int(env["WORLD_SIZE"])
    return DistInfo(int(env["RANK"]), world, int(env.get("LOCAL_RANK", 0)), int(env.get("LOCAL_WORLD_SIZE", world)))


def choose_backend(requested: str, device: str | None) -> str:
    """"auto": nccl when the agent runs on CUDA (and CUDA is there), gloo otherwise."""
    if requested in ("gloo", "nccl"):
        return requested
    if requested != "auto":
        raise ValueError(f"dist_backend must be 'auto', 'gloo' or 'nccl', got {requested!r}")
    if device and str(device).startswith("cuda"):
        import torch

        if torch.cuda.is_available():
            return "nccl"
    return "gloo"


def init_distributed(info: DistInfo, backend: str, timeout_s: float) -> DistInfo:
    """Join the process group (ranks wait for each other at barriers for up to timeout_s: a long rank's
    whole shard, so this is hours, not the 30-minute default)."""
    if not info.active:
        return info
    import torch
    import torch.distributed as dist

    if backend == "nccl":
        torch.cuda.set_device(info.local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    return DistInfo(info.rank, info.world_size, info.local_rank, info.local_world_size, backend)


def comm_device(info: DistInfo) -> "torch.device":
    """Where the process group's tensors live: this rank's GPU under nccl, else the CPU."""
    import torch

    return torch.device("cuda", info.local_rank) if info.backend == "nccl" else torch.device("cpu")


def json_tensor(obj: Any, device: "torch.device") -> "torch.Tensor":
    """A JSON-able value as a uint8 tensor of its UTF-8 JSON text (nothing pickled between ranks)."""
    import torch

    return torch.tensor(list(json.dumps(obj).encode()), dtype=torch.uint8, device=device)


def broadcast_json(obj: Any, info: DistInfo) -> Any:
    """Rank 0's JSON-able `obj` on every rank."""
    if not info.active:
        return obj
    import torch
    import torch.distributed as dist

    device = comm_device(info)
    data = json_tensor(obj, device) if info.is_main else torch.empty(0, dtype=torch.uint8, device=device)
    size = torch.tensor([data.numel()], dtype=torch.long, device=device)
    dist.broadcast(size, 0)
    if not info.is_main:
        data = torch.empty(int(size), dtype=torch.uint8, device=device)
    dist.broadcast(data, 0)
    return json.loads(bytes(data.cpu().tolist()).decode())


def barrier(info: DistInfo) -> None:
    if not info.active:
        return
    import torch.distributed as dist

    if info.backend == "nccl":
        dist.barrier(device_ids=[info.local_rank])
    else:
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    if not info.active:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def rank_cores(local_world_size: int = 1) -> int:
    """The CPU cores of one rank: the machine's shared out among the ranks on it, at least one. The one
    place the evaluation divides cores (its workers' torch threads, the policy server's threads, and
    whether a server pays on CPU all start from it)."""
    return max(1, (os.cpu_count() or 1) // max(1, local_world_size))


def torch_threads(share: int) -> int:
    """Torch CPU threads for a process given `share` of the cores: at least one, and at most OMP_NUM_THREADS
    where it is set, which the harness then honours instead of raising it (an evaluation run beside a
    training with OMP_NUM_THREADS=1 keeps to one thread a worker: two threads spin on busy cores)."""
    cap = os.environ.get("OMP_NUM_THREADS", "").strip()
    limit = int(cap) if cap.isdigit() and int(cap) > 0 else share
    return max(1, min(share, limit))


def rank_device(device: str | None, info: DistInfo) -> str | None:
    """A bare "cuda" means this rank's own GPU (LOCAL_RANK), not everybody's GPU 0."""
    if device == "cuda" and info.active:
        return f"cuda:{info.local_rank}"
    return device
