"""The mixed loader: the configured ratio, determinism, exact resume; the epoch sampler."""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils.data import DataLoader

from harness.data.vl.mixing import EpochSampler, MixedLoader, vl_fractions

torch.set_num_threads(1)


def loaders(n_action: int = 10, n_vl: int = 7, resumable: bool = True) -> dict[str, DataLoader]:
    """Two small loaders whose batches name their samples (actions 0..n-1, VL 100..)."""
    def make(values, seed):
        if resumable:
            return DataLoader(values, batch_size=3, sampler=EpochSampler(len(values), seed=seed), drop_last=True)
        return DataLoader(values, batch_size=3, shuffle=False, drop_last=True)
    return {"action": make(list(range(n_action)), 1), "vl": make(list(range(100, 100 + n_vl)), 2)}


def draw(mixed: MixedLoader, n: int) -> list[tuple[str, list[int]]]:
    return [(name, batch.tolist()) for name, batch in (next(mixed) for _ in range(n))]


@pytest.mark.parametrize("ratio", [0.05, 0.1, 0.25, 1 / 3, 0.5, 0.9])
def test_vl_ratio_is_kept_within_five_percent(ratio):
    mixed = MixedLoader(loaders(), vl_fractions(ratio), seed=4)
    kinds = [name for name, _ in draw(mixed, 2000)]
    assert abs(kinds.count("vl") / len(kinds) - ratio) <= 0.05
    for start in range(0, 2000, 100):  # and in every window of 100 batches
        assert abs(kinds[start : start + 100].count("vl") / 100 - ratio) <= 0.05
    assert abs(kinds.count("vl") - 2000 * ratio) <= 1  # the schedule is exact to one batch


def test_ratio_zero_and_one_use_one_loader():
    assert {name for name, _ in draw(MixedLoader({"action": loaders()["action"], "vl": None}, vl_fractions(0.0)), 20)} == {"action"}
    assert {name for name, _ in draw(MixedLoader({"action": None, "vl": loaders()["vl"]}, vl_fractions(1.0)), 20)} == {"vl"}
    with pytest.raises(ValueError, match=r"sources \['vl'\] have a fraction > 0 but no loader"):
        MixedLoader({"action": loaders()["action"], "vl": None}, vl_fractions(0.2))
    with pytest.raises(ValueError, match="sum to 1"):
        MixedLoader(loaders(), {"action": 0.5, "vl": 0.6})
    with pytest.raises(ValueError, match=r"ratio must be in \[0, 1\]"):
        vl_fractions(1.2)


def test_deterministic_by_seed_and_epochs_reshuffle():
    a = draw(MixedLoader(loaders(), vl_fractions(0.3), seed=7), 60)
    assert a == draw(MixedLoader(loaders(), vl_fractions(0.3), seed=7), 60)
    assert a != draw(MixedLoader(loaders(), vl_fractions(0.3), seed=8), 60)
    vl = [b for name, b in a if name == "vl"]  # 7 VL samples, batch 3, drop_last: 2 batches per epoch
    epochs = [sorted(sum(vl[i : i + 2], [])) for i in range(0, 8, 2)]
    assert all(len(set(e)) == 6 and set(e) <= set(range(100, 107)) for e in epochs)
    assert len({tuple(sum(vl[i : i + 2], [])) for i in range(0, 8, 2)}) > 1  # a new order each epoch


@pytest.mark.parametrize("resumable", [True, False])
@pytest.mark.parametrize("stop", [1, 13, 37])
def test_resume_continues_exactly(resumable, stop):
    full = draw(MixedLoader(loaders(resumable=resumable), vl_fractions(0.4), seed=3), stop + 40)
    first = MixedLoader(loaders(resumable=resumable), vl_fractions(0.4), seed=3)
    assert draw(first, stop) == full[:stop]
    state = json.loads(json.dumps(first.state_dict()))  # it goes into trainer_state.json
    resumed = MixedLoader(loaders(resumable=resumable), vl_fractions(0.4), seed=3)
    resumed.load_state_dict(state)
    assert draw(resumed, 40) == full[stop:]
    assert resumed.state_dict()["step"] == stop + 40


def test_resume_rejects_another_mix():
    state = MixedLoader(loaders(), vl_fractions(0.4), seed=3).state_dict()
    with pytest.raises(ValueError, match="state is for seed 3"):
        MixedLoader(loaders(), vl_fractions(0.5), seed=3).load_state_dict(state)
    started = MixedLoader(loaders(), vl_fractions(0.4), seed=3)
    next(started)
    with pytest.raises(ValueError, match="before the first batch"):
        started.load_state_dict(state)


def test_empty_loader_is_an_error():
    empty = DataLoader([1, 2], batch_size=3, drop_last=True)
    with pytest.raises(ValueError, match="source 'vl' yields no batch"):
        draw(MixedLoader({"action": loaders()["action"], "vl": empty}, vl_fractions(0.5)), 4)


def test_epoch_sampler_shards_ranks_and_skips():
    ranks = [list(EpochSampler(10, seed=1, rank=r, world_size=3)) for r in range(3)]
    assert all(len(r) == 3 for r in ranks) and len(set(sum(ranks, []))) == 9  # disjoint, tail dropped
    s = EpochSampler(10, seed=1)
    whole = list(s)
    s.set_start(4)
    assert len(s) == 6 and list(s) == whole[4:]
    assert list(s) == whole  # the start applies to one pass only
    s.set_epoch(1)
    assert sorted(s) == list(range(10)) and list(s) != whole
    assert list(EpochSampler(5, shuffle=False)) == [0, 1, 2, 3, 4]
