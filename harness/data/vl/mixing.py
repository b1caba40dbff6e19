"""Sharing micro-batches between named sources at fixed fractions, resumable (vision-language co-training).

`CreditSchedule({"action": 0.75, "vl": 0.25}, seed)` says which source serves each step. It is a
deterministic schedule, not a coin flip: source s is due at step k when its credit
`phase_s + (k + 1) * fraction_s - served_s` is the largest, so after any n steps every source has served
within one batch of `n * fraction_s`, from the first step on (a coin flip drifts by ~sqrt(n)). The phases
are drawn from `seed`: the schedule is the same on every rank of a distributed run, so all ranks run the
same kind of step together (DDP needs this: the two losses reach different parameters). Its state
(`state_dict`, JSON) is part of the trainer's resume state. The trainer's mixed stream
(`harness.train.cotraining.MixedStream`) draws from the sources in this order.

`EpochSampler`: a permutation per (seed, epoch), optionally sharded across ranks, that can start part-way
through an epoch, so that a resumed VL loader skips to its position without reading data.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
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


class CreditSchedule:
    """Which source serves each step: source s is due when its credit `phase_s + (k + 1) * fraction_s -
    served_s` is the largest (see the module doc)."""

    def __init__(self, fractions: Mapping[str, float], seed: int = 0):
        if not fractions or any(f < 0 for f in fractions.values()) or abs(sum(fractions.values()) - 1) > 1e-6:
            raise ValueError(f"mixing: fractions must be >= 0 and sum to 1, got {dict(fractions)}")
        self.fractions = {name: float(f) for name, f in fractions.items() if f > 0}
        self.seed = seed
        self.names = list(self.fractions)
        phases = np.random.default_rng(seed).random(len(self.names))
        self.phase = dict(zip(self.names, phases.tolist()))
        self.step = 0
        self.served = dict.fromkeys(self.names, 0)

    def next_source(self) -> str:
        """The source that serves the current step."""
        k = self.step
        return max(self.names, key=lambda s: self.phase[s] + (k + 1) * self.fractions[s] - self.served[s])

    def advance(self, name: str) -> None:
        self.served[name] += 1
        self.step += 1

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "seed": self.seed, "fractions": dict(self.fractions), "served": dict(self.served)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("seed") != self.seed or state.get("fractions") != self.fractions:
            raise ValueError(f"mixing state is for seed {state.get('seed')} and fractions {state.get('fractions')}, "
                             f"this run has seed {self.seed} and fractions {self.fractions}")
        self.step = int(state["step"])
        self.served = {n: int(state["served"][n]) for n in self.names}
