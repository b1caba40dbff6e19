"""The streams of batches the trainer draws micro-batches from: the protocol, and the action windows' stream.

Data order is a pure function of (seed, epoch, position), whatever the number of ranks:
`ResumableDistributedSampler` is torch's DistributedSampler (seeded permutation per epoch, rank r takes
every world-th index) that can start part-way through an epoch, and `EpochSeeded` makes the random-shift
augmentation of window i in epoch e depend on (seed, e, i) only. So a run resumed after a kill, a run on
2 ranks with half the batch, and a run with 4x accumulation all see the same samples with the same
augmentation as the plain run. The vision-language stream and the mixer of several streams are
harness/train/cotraining.py's.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from harness.data.windows import collate_windows
from harness.ranks import DistInfo

Batch = Any


class BatchStream(Protocol):
    """Yields (source name, batch) forever; its position is JSON and restores exactly."""

    batches_per_epoch: int  # micro-batches of the action data per epoch, per rank (defines `epoch`)

    def __next__(self) -> tuple[str, Batch]: ...

    @property
    def epoch(self) -> float:
        """Epochs of the action data consumed (fractional)."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


class ResumableDistributedSampler(DistributedSampler):
    """torch's DistributedSampler that can start `start` samples into this rank's share of the epoch.

    drop_last=True: every rank gets floor(n / world) samples, so a global batch of B x world on N ranks
    covers the same samples as a batch of B x world on one."""

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int, shuffle: bool = True):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=True)
        self.start = 0

    def __iter__(self) -> Iterator[int]:
        return iter(list(super().__iter__())[self.start:])

    def __len__(self) -> int:
        return self.num_samples - self.start


class EpochSeeded(Dataset):
    """Items whose randomness (the window augmentation) is seeded by (seed, epoch, index).

    WindowDataset draws its random shift from torch's global RNG; here each item is produced under its own
    seed and the caller's RNG state is put back, so items do not depend on which rank, worker or resumed
    run reads them, and reading one does not disturb the training RNG. `epoch` is set before each epoch's
    DataLoader iterator is made (worker processes receive a copy then: persistent_workers must stay off)."""

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset = dataset
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        seed = int(np.random.SeedSequence([self.seed, self.epoch, int(index)]).generate_state(1)[0])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]


class EpochStream:
    """Batches of one source from a DataLoader, epoch after epoch, with its position (epoch, batches of it
    handed out) for resume. Subclasses set `name`, `loader`, `batches_per_epoch` and say how a pass
    starts at (epoch, first sample of this rank's share)."""

    name: str
    loader: DataLoader
    batches_per_epoch: int

    def _position_sampler(self, epoch: int, start_sample: int) -> None:
        raise NotImplementedError

    def _reset_position(self) -> None:
        self._epoch, self._batch = 0, 0
        self._it: Iterator[Batch] | None = None

    def __iter__(self) -> "EpochStream":
        return self

    def __next__(self) -> tuple[str, Batch]:
        if self._batch >= self.batches_per_epoch:
            self._epoch, self._batch, self._it = self._epoch + 1, 0, None
        if self._it is None:
            self._position_sampler(self._epoch, self._batch * self.loader.batch_size)
            self._it = iter(self.loader)
        batch = next(self._it)
        self._batch += 1
        return self.name, batch

    @property
    def epoch(self) -> float:
        return self._epoch + self._batch / self.batches_per_epoch


class ActionStream(EpochStream):
    """The action windows of one rank: DataLoader + ResumableDistributedSampler, epoch after epoch."""

    name = "action"

    def __init__(self, dataset: Dataset, batch_size: int, dist: DistInfo, seed: int, num_workers: int = 0,
                 pin_memory: bool = False):
        self.items = EpochSeeded(dataset, seed)
        self.sampler = ResumableDistributedSampler(self.items, dist.world_size, dist.rank, seed)
        self.batch_size = batch_size
        self.batches_per_epoch = self.sampler.num_samples // batch_size
        if self.batches_per_epoch == 0:
            raise ValueError(f"the training data has {len(dataset)} windows: fewer than one global batch "
                             f"({batch_size} x {dist.world_size} ranks); lower trainer.batch_size")
        self.loader = DataLoader(
            self.items, batch_size=batch_size, sampler=self.sampler, num_workers=num_workers,
            collate_fn=collate_windows, drop_last=True, pin_memory=pin_memory, persistent_workers=False,
            generator=torch.Generator(),  # the loader's own base seed: creating an iterator leaves torch's RNG alone
        )
        self._reset_position()

    def _position_sampler(self, epoch: int, start_sample: int) -> None:
        self.sampler.set_epoch(epoch)
        self.sampler.start = start_sample
        self.items.epoch = epoch

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self._epoch, "batch": self._batch, "seed": self.items.seed, "batch_size": self.batch_size,
                "world_size": self.sampler.num_replicas, "windows": len(self.items)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        mine = self.state_dict()
        for key in ("seed", "windows"):
            if state[key] != mine[key]:
                raise ValueError(f"cannot resume the data position: the checkpoint's {key} is {state[key]}, this run's "
                                 f"{mine[key]} (same seed and dataset needed)")
        # the position in global batches carries over to another world size with the same global batch
        saved_global, global_now = state["batch_size"] * state["world_size"], self.batch_size * self.sampler.num_replicas
        if saved_global != global_now:
            raise ValueError(f"cannot resume the data position: the checkpoint's global micro-batch is {saved_global} "
                             f"(batch_size x world size), this run's {global_now}")
        self._epoch, self._batch, self._it = int(state["epoch"]), int(state["batch"]), None
