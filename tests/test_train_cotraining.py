"""The two-stage recipe through the real configs: stage 1 on generated VQA data (configs/experiment/vl_stage1),
its checkpoint into stage 2 with co-training (vl_stage2), the micro-batch shares, VQA validation during
training, exact resume of the mixed stream, and the configuration errors."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from harness.data.vl.generate import generate
from harness.config_errors import ConfigError
from harness.train.cotraining import MixedStream
from harness.train.state import load_trainer_state
from tests.train_helpers import assert_close_weights, dataset, metrics, train_here, weights  # noqa: F401  (fixture)


@pytest.fixture(scope="module")
def vl_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("vl") / "sim"
    generate(out, num_states=8, seed=3, scenes="D", val_fraction=0.25)
    return out


@pytest.fixture(scope="module")
def stage1(dataset, vl_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("stage1")
    summary = train_here(dataset, out, "+experiment=vl_stage1", f"sources.vl.options.path={vl_data}",
                         "trainer.batch_size=4", "trainer.max_steps=4", "trainer.val_every=2", "trainer.val_samples=8")
    return out, summary


def test_stage_1_trains_on_vl_only_and_keeps_the_best_vqa_checkpoint(stage1):
    out, summary = stage1
    records = metrics(out)
    steps = [r for r in records if "loss" in r]
    assert len(steps) == 4 and all(r["loss"] == r["loss/vl"] and "loss/action" not in r for r in steps)
    vqa = [r for r in records if "val/vqa_accuracy" in r]
    assert [r["step"] for r in vqa] == [2, 4]
    assert all(0 <= r["val/vqa_accuracy"] <= 1 and 0 < r["val/vqa_majority"] < 1 for r in vqa)
    assert summary["best"]["metric"] == "vqa_accuracy"
    assert summary["best"]["value"] == max(r["val/vqa_accuracy"] for r in vqa)
    assert (out / "checkpoints" / "best").is_dir()


def test_stage_2_starts_from_stage_1_and_co_trains_at_the_configured_share(dataset, vl_data, stage1, tmp_path):
    stage1_dir, _ = stage1
    out = tmp_path / "stage2"
    # lr ~ 0: after one step the weights are still stage 1's, which shows that they were loaded
    summary = train_here(dataset, out, "+experiment=vl_stage2", f"init_from={stage1_dir / 'checkpoints' / 'last'}",
                         f"sources.vl.options.path={vl_data}", "trainer.max_steps=2", "trainer.val_every=1",
                         "trainer.val_samples=8", "optim.lr=1e-12", "optim.warmup_steps=0",
                         "sources.vl.weight=0.5")
    before, after = weights(stage1_dir / "checkpoints" / "last"), weights(out / "checkpoints" / "last")
    assert before.keys() == after.keys()
    for name in before:
        torch.testing.assert_close(after[name], before[name], rtol=0, atol=1e-6, msg=name)
    for r in (r for r in metrics(out) if "loss" in r):
        # grad_accum 4 at ratio 0.75 : 0.25 -> 3 action and 1 VL micro-batch in every step, weighted 1 : 0.5
        assert r["loss"] == pytest.approx(r["loss/action"] + 0.5 * r["loss/vl"], rel=1e-6)
        assert r["loss/vl"] > 0 and r["loss_arm"] > 0
    state = _trainer_state(out)
    assert state["data"]["schedule"]["served"] == {"action": 6, "vl": 2}
    assert summary["val"]["val/vqa_accuracy"] is not None and summary["val_loss"] is not None


def test_co_training_resumes_exactly_from_a_checkpoint(dataset, vl_data, tmp_path):
    run = ("sources=action_vl", f"sources.vl.options.path={vl_data}", "trainer.grad_accum=4", "trainer.max_steps=6",
           "trainer.ckpt_every=3", "trainer.keep_last=0", "trainer.val_every=0", "trainer.val_samples=4",
           "sources.vl.ratio=0.4", "sources.action.ratio=0.6")
    straight = tmp_path / "straight"
    train_here(dataset, straight, *run)
    resumed = tmp_path / "resumed"
    train_here(dataset, resumed, *run, f"resume={straight / 'checkpoints' / 'step_0000003'}")
    assert [r["step"] for r in metrics(resumed) if "loss" in r] == [4, 5, 6]
    assert_close_weights(straight, resumed, atol=0)
    assert _trainer_state(resumed)["data"] == _trainer_state(straight)["data"]


class Counting:
    """A stand-in stream that counts its batches; `batches_per_epoch` of them make an epoch."""

    def __init__(self, name: str, batches_per_epoch: int):
        self.name, self.batches_per_epoch, self.n = name, batches_per_epoch, 0

    def __next__(self) -> tuple[str, Any]:
        self.n += 1
        return self.name, self.n

    @property
    def epoch(self) -> float:
        return self.n / self.batches_per_epoch

    def state_dict(self) -> dict[str, Any]:
        return {"n": self.n}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.n = state["n"]


def _mixed(seed: int = 0) -> MixedStream:
    return MixedStream({"action": Counting("action", 100), "vl": Counting("vl", 7)}, {"action": 3.0, "vl": 1.0}, seed)


def test_the_mixed_stream_keeps_the_share_counts_epochs_in_action_data_and_resumes():
    mixed = _mixed()
    drawn = [next(mixed)[0] for _ in range(2000)]
    assert abs(drawn.count("vl") / 2000 - 0.25) <= 0.05 * 0.25
    for start in range(0, 2000, 100):  # and in every window of 100
        assert abs(drawn[start:start + 100].count("vl") - 25) <= 2
    assert mixed.epoch == mixed.streams["action"].n / 100  # epochs count the action data
    assert mixed.batches_per_epoch == 133  # 100 action batches are 4/3 x 100 mixed micro-batches

    state = mixed.state_dict()
    rest = [next(mixed) for _ in range(50)]
    again = _mixed()
    again.load_state_dict(state)
    assert [next(again) for _ in range(50)] == rest
    with pytest.raises(ValueError, match="seed"):
        _mixed(seed=1).load_state_dict(state)


@pytest.mark.parametrize("overrides, message", [
    (("sources=action_vl", "sources.vl.options.path={vl}", "+sources.vl.options.ratio=0.5"), "sources.vl.ratio"),
    (("trainer.best_metric=vqa_accuracy",), "needs a vision-language source"),
    (("stage=1", "sources=vl", "sources.vl.options.path={vl}"), "best_metric=val_loss needs the action source"),
    (("sources=action_vl", "sources.vl.options.path={vl}/nowhere"), "nowhere/train.json does not exist"),
    (("sources=action_vl", "sources.vl.options.path={vl}", "sources.vl.options.batch_size=1000"), "fewer than one batch"),
    (("sources=action_vl", "sources.vl.options.path={vl}", "sources.vl.ratio=0"), "ratio 0 in a mix"),
])
def test_configuration_errors_name_the_setting(dataset, vl_data, tmp_path, overrides, message):
    with pytest.raises((ConfigError, ValueError, FileNotFoundError), match=message):
        train_here(dataset, tmp_path / "run", *(o.format(vl=vl_data) for o in overrides), "trainer.max_steps=1")


def _trainer_state(run) -> dict[str, Any]:
    return load_trainer_state(run / "checkpoints" / "last")[0]


def test_a_source_weighs_the_same_on_average_whatever_the_accumulation():
    """Loss scales: a source's share of its items in the step, times its micro-batches over their expected number.
    At 3:1 with accumulation 4 every step holds one VL batch (factor 1); with accumulation 1, a VL step counts 4x
    and an action step 4/3, so that over 4 steps each source's loss weighs as it does at accumulation 4."""
    from harness.train.trainer import loss_scales

    fractions = {"action": 0.75, "vl": 0.25}
    group = [("action", None), ("action", None), ("vl", None), ("action", None)]
    totals = {"action": 24.0, "vl": 8.0}
    assert loss_scales(group, [8, 8, 8, 8], totals, fractions, 1) == pytest.approx([1 / 3, 1 / 3, 1.0, 1 / 3])
    assert loss_scales([("vl", None)], [8], {"vl": 8.0, "action": 0.0}, fractions, 1) == pytest.approx([4.0])
    assert loss_scales([("action", None)], [8], {"action": 8.0, "vl": 0.0}, fractions, 1) == pytest.approx([4 / 3])
    # accumulation 3 at a quarter: 4 steps of 12 micro-batches hold 3 VL batches, one step none. A step with its VL
    # batch counts it 4/3 (3/4 x 4/3 = 1 over the steps) and its 2 action batches 2 x 4/9; the step of 3 action
    # batches counts them 4/3 in all: (3 x 8/9 + 4/3) / 4 = 1
    three = [("action", None), ("vl", None), ("action", None)]
    assert loss_scales(three, [8, 8, 8], {"action": 16.0, "vl": 8.0}, fractions, 1) == pytest.approx([4 / 9, 4 / 3, 4 / 9])
    assert sum(loss_scales([("action", None)] * 3, [8] * 3, {"action": 24.0}, fractions, 1)) == pytest.approx(4 / 3)
    # one source: the plain share of the global batch (2 ranks: DDP averages their gradients)
    two_ranks = loss_scales([("action", None)] * 2, [5, 3], {"action": 16.0}, {"action": 1.0}, 2)
    assert two_ranks == pytest.approx([10 / 16, 6 / 16])
