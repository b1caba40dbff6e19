"""Named batch sources: data order independent of the rank layout, the loss dispatch on the source name with
per-source weights (the stages with real VL data: tests/test_train_cotraining.py)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from harness.data.config import build_dataset
from harness.train import sources
from harness.train.sources import SourceLosses
from harness.train.streams import EpochSeeded, ResumableDistributedSampler
from tests.train_helpers import config, dataset, metrics, train_here  # noqa: F401  (fixture)
from tests.vla_helpers import build_model, tiny_dir  # noqa: F401  (fixture)


def test_two_ranks_of_the_sampler_cover_the_one_process_order_and_start_mid_epoch(dataset):
    items = list(range(86))
    one = ResumableDistributedSampler(items, 1, 0, seed=3)
    ranks = [ResumableDistributedSampler(items, 2, r, seed=3) for r in (0, 1)]
    for s in (one, *ranks):
        s.set_epoch(1)
    order = list(one)
    r0, r1 = list(ranks[0]), list(ranks[1])
    # global batch j = 2 x 2 on two ranks covers exactly one process's batch j of 4
    for j in range(len(r0) // 2):
        assert sorted(r0[2 * j : 2 * j + 2] + r1[2 * j : 2 * j + 2]) == sorted(order[4 * j : 4 * j + 4])
    ranks[0].start = 6
    assert list(ranks[0]) == r0[6:] and len(ranks[0]) == len(r0) - 6
    one.set_epoch(2)
    assert list(one) != order  # a new permutation each epoch


def test_augmentation_depends_on_seed_epoch_and_index_only_and_leaves_the_rng_alone(dataset):
    cfg = config(dataset, dataset / "unused", "data.augment=true")
    windows = EpochSeeded(build_dataset(cfg.data, cfg.model.window_spec(), train=True), seed=0)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = windows[5]["rgb_static"]
    assert torch.equal(torch.get_rng_state(), state)  # reading an item draws nothing from the caller's RNG
    torch.rand(10)
    assert np.array_equal(windows[5]["rgb_static"], a)  # whatever happened in between
    windows.epoch = 1
    assert not np.array_equal(windows[5]["rgb_static"], a)  # another epoch, another shift


def _vl_batch(i: int, b: int = 2) -> dict[str, Any]:
    g = torch.Generator().manual_seed(i)
    return {"images": torch.randint(0, 256, (b, 32, 32, 3), dtype=torch.uint8, generator=g),
            "prompts": ["what is on the table?"] * b, "answers": ["the red block", "the drawer"][:b]}


def test_the_loss_of_a_batch_is_dispatched_on_its_source(tiny_dir):
    model = build_model(tiny_dir, "tiny_llava")
    net = SourceLosses(model)
    batch = _vl_batch(0)
    torch.testing.assert_close(net("vl", batch)["loss"], model.vl_loss([batch["images"]], batch["prompts"], batch["answers"]))
    from tests.vla_helpers import make_batch

    action = make_batch(2)
    assert net("action", action)["loss"] == model(action)["loss"]
    assert sources.LOSSES["action"].count(action) == int(action["action_mask"].sum())
