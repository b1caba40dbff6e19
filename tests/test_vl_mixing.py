"""The credit schedule that shares micro-batches between sources (the trainer's mixed stream draws in its
order: tests/test_train_cotraining.py), and the resumable epoch sampler of the VL loader."""

from __future__ import annotations

import json

import pytest

from harness.data.vl.mixing import CreditSchedule, EpochSampler


def draw(schedule: CreditSchedule, n: int) -> list[str]:
    out = []
    for _ in range(n):
        name = schedule.next_source()
        schedule.advance(name)
        out.append(name)
    return out


def mix(ratio: float, seed: int = 4) -> CreditSchedule:
    return CreditSchedule({"action": 1 - ratio, "vl": ratio}, seed)


@pytest.mark.parametrize("ratio", [0.05, 0.1, 0.25, 1 / 3, 0.5, 0.9])
def test_vl_ratio_is_kept_within_five_percent(ratio):
    kinds = draw(mix(ratio), 2000)
    assert abs(kinds.count("vl") / len(kinds) - ratio) <= 0.05 * ratio
    for start in range(0, 2000, 100):  # and in every window of 100 batches
        assert abs(kinds[start : start + 100].count("vl") / 100 - ratio) <= 0.05
    assert abs(kinds.count("vl") - 2000 * ratio) <= 1  # the schedule is exact to one batch


def test_ratio_zero_and_one_use_one_source_and_bad_fractions_are_refused():
    assert set(draw(mix(0.0), 20)) == {"action"}
    assert set(draw(mix(1.0), 20)) == {"vl"}
    with pytest.raises(ValueError, match="sum to 1"):
        CreditSchedule({"action": 0.5, "vl": 0.6})
    with pytest.raises(ValueError, match=">= 0"):
        CreditSchedule({"action": 1.5, "vl": -0.5})


def test_deterministic_by_seed():
    a = draw(mix(0.3, seed=7), 60)
    assert a == draw(mix(0.3, seed=7), 60)
    assert a != draw(mix(0.3, seed=8), 60)


@pytest.mark.parametrize("stop", [1, 13, 37])
def test_resume_continues_exactly(stop):
    full = draw(mix(0.4, seed=3), stop + 40)
    first = mix(0.4, seed=3)
    assert draw(first, stop) == full[:stop]
    state = json.loads(json.dumps(first.state_dict()))  # it goes into trainer_state.json
    resumed = mix(0.4, seed=3)
    resumed.load_state_dict(state)
    assert draw(resumed, 40) == full[stop:]
    assert resumed.state_dict()["step"] == stop + 40


def test_resume_rejects_another_mix():
    state = mix(0.4, seed=3).state_dict()
    with pytest.raises(ValueError, match="state is for seed 3"):
        mix(0.5, seed=3).load_state_dict(state)
    with pytest.raises(ValueError, match="state is for seed 3"):
        mix(0.4, seed=4).load_state_dict(state)


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
    with pytest.raises(ValueError, match="cannot be shared by 3 ranks"):
        EpochSampler(2, world_size=3)
