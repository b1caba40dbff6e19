"""Batches from several named loaders at fixed fractions (action / vision-language co-training), resumable.

`MixedLoader({"action": action_loader, "vl": vl_loader}, {"action": 0.75, "vl": 0.25}, seed)` is an endless
iterator of `(name, batch)`. Which loader serves step k is a deterministic schedule, not a coin flip:
source s is due when its credit `phase_s + (k + 1) * fraction_s - served_s` is the largest, so after
any n steps every source has served within one batch of `n * fraction_s`, from the first step on (a coin
flip drifts by ~sqrt(n)). The phases are drawn from `seed`: the schedule is the same on every rank of a
distributed run, so all ranks run the same kind of step together (DDP needs this: the two losses reach
different parameters).

A loader that runs out starts its next epoch (`sampler.set_epoch(epoch)` when it has one). For exact
resume, `state_dict()` (JSON-serialisable) holds the step, the batches served per source and each
source's epoch and position in it; `load_state_dict(state)` puts a fresh MixedLoader back there. With an
`EpochSampler` (or any sampler with `set_epoch` and `set_start`) the position is restored without reading
data; otherwise the batches of the current epoch are drawn again and dropped, which is exact only if
the loader's order is deterministic per epoch.

`EpochSampler` is that sampler: a permutation per (seed, epoch), optionally sharded across ranks.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
from torch.utils.data import Sampler


class EpochSampler(Sampler[int]):
    """Indices 0..n-1: a permutation per (seed, epoch) (or in order), rank `rank`'s share of
    `world_size` equal shares (the tail that does not divide is dropped), from `start` on."""

    def __init__(self, n: int, shuffle: bool = True, seed: int = 0, rank: int = 0, world_size: int = 1):
        if n < world_size:
            raise ValueError(f"EpochSampler: {n} samples cannot be shared by {world_size} ranks")
        if not 0 <= rank < world_size:
            raise ValueError(f"EpochSampler: rank {rank} out of range for world_size {world_size}")
        self.n, self.shuffle, self.seed, self.rank, self.world_size = n, shuffle, seed, rank, world_size
        self.epoch = 0
        self.start = 0  # samples of this rank's share to skip in the next pass (resume)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def set_start(self, start: int) -> None:
        """Skip the first `start` samples of the next pass only (the position of a resumed epoch)."""
        self.start = start

    def indices(self) -> list[int]:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n) if self.shuffle else np.arange(self.n)
        per_rank = self.n // self.world_size
        return order[self.rank : per_rank * self.world_size : self.world_size].tolist()

    def __iter__(self) -> Iterator[int]:
        start, self.start = self.start, 0
        return iter(self.indices()[start:])

    def __len__(self) -> int:
        return self.n // self.world_size - self.start


def _sampler(loader: Any) -> Any | None:
    return getattr(loader, "sampler", None)


class _Source:
    """One named loader: its iterator, epoch and position within the epoch."""

    def __init__(self, name: str, loader: Iterable):
        self.name, self.loader = name, loader
        self.epoch, self.batches = 0, 0  # position: batches already served in this epoch
        self._it: Iterator | None = None

    def _start_epoch(self, skip_batches: int) -> None:
        sampler = _sampler(self.loader)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(self.epoch)
        drop = skip_batches
        if skip_batches and hasattr(sampler, "set_start"):
            sampler.set_start(skip_batches * int(getattr(self.loader, "batch_size", None) or 1))
            drop = 0
        self._it = iter(self.loader)
        for _ in range(drop):  # no resumable sampler: replay the epoch's batches and drop them
            next(self._it)

    def next(self) -> Any:
        if self._it is None:
            self._start_epoch(self.batches)
        try:
            batch = next(self._it)
        except StopIteration:
            self.epoch, self.batches = self.epoch + 1, 0
            self._start_epoch(0)
            try:
                batch = next(self._it)
            except StopIteration:
                raise ValueError(f"mixed loader: source {self.name!r} yields no batch in epoch {self.epoch}") from None
        self.batches += 1
        return batch


class MixedLoader:
    """Endless iterator of (source name, batch) at fixed fractions; see the module doc."""

    def __init__(self, loaders: Mapping[str, Iterable | None], fractions: Mapping[str, float], seed: int = 0):
        unknown = sorted(set(fractions) - set(loaders))
        if unknown:
            raise ValueError(f"mixed loader: fractions name {unknown}, which have no loader (loaders: {sorted(loaders)})")
        if any(f < 0 for f in fractions.values()) or abs(sum(fractions.values()) - 1) > 1e-6:
            raise ValueError(f"mixed loader: fractions must be >= 0 and sum to 1, got {dict(fractions)}")
        self.fractions = {name: float(f) for name, f in fractions.items() if f > 0}
        missing = [name for name in self.fractions if loaders[name] is None]
        if missing:
            raise ValueError(f"mixed loader: sources {missing} have a fraction > 0 but no loader")
        self.seed = seed
        self.names = list(self.fractions)
        phases = np.random.default_rng(seed).random(len(self.names))
        self.phase = dict(zip(self.names, phases.tolist()))
        self.sources = {name: _Source(name, loaders[name]) for name in self.names}
        self.step = 0
        self.served = dict.fromkeys(self.names, 0)

    def next_source(self) -> str:
        """The source that serves the current step (without drawing its batch)."""
        k = self.step
        return max(self.names, key=lambda s: self.phase[s] + (k + 1) * self.fractions[s] - self.served[s])

    def __iter__(self) -> "MixedLoader":
        return self

    def __next__(self) -> tuple[str, Any]:
        name = self.next_source()
        batch = self.sources[name].next()
        self.served[name] += 1
        self.step += 1
        return name, batch

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "seed": self.seed, "fractions": dict(self.fractions), "served": dict(self.served),
                "sources": {n: {"epoch": s.epoch, "batches": s.batches} for n, s in self.sources.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume at `state` (from state_dict) with the same fractions and seed; before the first batch."""
        if state.get("seed") != self.seed or state.get("fractions") != self.fractions:
            raise ValueError(f"mixed loader state is for seed {state.get('seed')} and fractions {state.get('fractions')}, "
                             f"this loader has seed {self.seed} and fractions {self.fractions}")
        if any(s._it is not None for s in self.sources.values()):
            raise ValueError("load_state_dict must be called before the first batch is drawn")
        self.step = int(state["step"])
        self.served = {n: int(state["served"][n]) for n in self.names}
        for name, source in self.sources.items():
            source.epoch, source.batches = int(state["sources"][name]["epoch"]), int(state["sources"][name]["batches"])


def vl_fractions(vl_ratio: float) -> dict[str, float]:
    """{"action": 1 - r, "vl": r}: the stage-2 mix for a VL co-training ratio r (fraction of batches)."""
    if not 0 <= vl_ratio <= 1:
        raise ValueError(f"VL co-training ratio must be in [0, 1], got {vl_ratio}")
    return {"action": 1.0 - vl_ratio, "vl": float(vl_ratio)}
