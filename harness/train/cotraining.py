"""Vision-language co-training in the trainer: the `vl` batch source and the mixer of several sources.

harness/train/sources.py serves them for these configs:

    sources=vl stage=1        configs/sources/vl.yaml: VL batches only (configs/experiment/vl_stage1.yaml)
    sources=action_vl         configs/sources/action_vl.yaml: 3 action : 1 VL micro-batches (vl_stage2.yaml)

`sources.vl.options` are `harness.data.vl.config.VLDataConfig` fields (configs/data/vl_sim.yaml: path,
files, image size, ...); `sources.<name>.ratio` is the source's share of micro-batches (normalised) and
`sources.<name>.weight` scales its loss. Which source serves a micro-batch follows `CreditSchedule`
(deterministic, the same on every rank, within one batch of the configured share after any number of
steps); the positions of the schedule and of every source are part of the trainer's resume state.

`VQAValidation`: with a `vl` source, every validation also measures VQA accuracy (exact match, as
`python -m harness.eval.vqa`) on `trainer.val_samples` evenly spread validation questions, beside the
majority-answer baseline: stage 1's progress and stage 2's forgetting, step by step
(`trainer.best_metric=vqa_accuracy` keeps the best of them).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from harness.data.vl.config import VLDataConfig, build_vl_dataset, make_vl_loader
from harness.data.vl.mixing import CreditSchedule
from harness.eval.vqa import evaluate_vqa, majority_answers
from harness.ranks import DistInfo
from harness.train.config import TrainConfig
from harness.train.streams import BatchStream, EpochStream


class VLStream(EpochStream):
    """VL batches of one rank (`EpochSampler` sharded by rank), epoch after epoch, resumable."""

    name = "vl"

    def __init__(self, cfg: VLDataConfig, dist: DistInfo):
        dataset = build_vl_dataset(cfg, train=True)
        self.loader = make_vl_loader(cfg, train=True, rank=dist.rank, world_size=dist.world_size, dataset=dataset)
        self.batches_per_epoch = len(self.loader)
        if self.batches_per_epoch == 0:
            raise ValueError(f"{cfg.file(True)}: {len(dataset)} examples, fewer than one batch of {cfg.batch_size} per rank")
        self.seed = cfg.seed
        self._reset_position()

    def _position_sampler(self, epoch: int, start_sample: int) -> None:
        self.loader.sampler.set_epoch(epoch)
        self.loader.sampler.set_start(start_sample)

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self._epoch, "batch": self._batch, "seed": self.seed, "batches_per_epoch": self.batches_per_epoch}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state["seed"] != self.seed or state["batches_per_epoch"] != self.batches_per_epoch:
            raise ValueError(f"cannot resume the VL data position: saved for seed {state['seed']} and "
                             f"{state['batches_per_epoch']} batches/epoch, this run has {self.seed} and {self.batches_per_epoch}")
        self._epoch, self._batch, self._it = int(state["epoch"]), int(state["batch"]), None


class MixedStream:
    """Several streams in one, at fixed shares of micro-batches. Epochs count the action data when there
    is any (stage 2), else the first source's."""

    def __init__(self, streams: Mapping[str, BatchStream], ratios: Mapping[str, float], seed: int):
        total = sum(ratios[n] for n in streams)
        if total <= 0:
            raise ValueError(f"sources {sorted(streams)}: the ratios must not all be 0")
        self.streams = dict(streams)
        self.schedule = CreditSchedule({n: ratios[n] / total for n in streams}, seed)
        clock = "action" if "action" in self.streams else next(iter(self.streams))
        self.clock = self.streams[clock]
        # the trainer counts epochs in micro-batches of the clock's data; mixed steps hold fewer of them
        self.batches_per_epoch = max(int(self.clock.batches_per_epoch / self.schedule.fractions[clock]), 1)

    def __iter__(self) -> "MixedStream":
        return self

    def __next__(self) -> tuple[str, Any]:
        name = self.schedule.next_source()
        source, batch = next(self.streams[name])
        self.schedule.advance(name)
        return source, batch

    @property
    def epoch(self) -> float:
        return self.clock.epoch

    def state_dict(self) -> dict[str, Any]:
        return {"schedule": self.schedule.state_dict(), "streams": {n: s.state_dict() for n, s in self.streams.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.schedule.load_state_dict(state["schedule"])
        for name, stream in self.streams.items():
            stream.load_state_dict(state["streams"][name])


def vl_data_config(cfg: TrainConfig, batch_size: int) -> VLDataConfig:
    """`sources.vl.options` as a VLDataConfig (batch size and seed default to the trainer's)."""
    options = dict(cfg.sources["vl"].options)
    for key, instead in (("ratio", "sources.vl.ratio"), ("loss_weight", "sources.vl.weight")):
        if key in options:
            raise ValueError(f"sources.vl.options.{key}: the trainer mixes by {instead}; set that instead")
    if "path" not in options:
        raise ValueError("sources.vl.options.path: the folder of the VL data (python -m harness.data.vl generate OUT)")
    options.setdefault("batch_size", batch_size)
    options.setdefault("seed", cfg.trainer.seed)
    return VLDataConfig.from_dict(options)


def check_vl_source(cfg: TrainConfig) -> None:
    train_file = vl_data_config(cfg, cfg.trainer.batch_size).file(True)
    if not train_file.is_file():
        raise ValueError(f"sources.vl.options: {train_file} does not exist (python -m harness.data.vl generate "
                         "OUT writes train.json and val.json; or set train_file/val_file)")


def build_vl_stream(cfg: TrainConfig, dist: DistInfo, batch_size: int) -> VLStream:
    return VLStream(vl_data_config(cfg, batch_size), dist)


class VQAValidation:
    """VQA accuracy of the model on a fixed, evenly spread subset of the validation questions (rank 0)."""

    def __init__(self, cfg: TrainConfig):
        vl = vl_data_config(cfg, cfg.trainer.batch_size)
        train, self.dataset = build_vl_dataset(vl, train=True), build_vl_dataset(vl, train=False)
        self.majority = majority_answers((ex.question_type, ex.answer) for ex in train.examples)
        samples = cfg.trainer.val_samples
        if samples is not None and samples < len(self.dataset):
            keep = np.unique(np.linspace(0, len(self.dataset) - 1, samples).round().astype(np.int64))
            self.dataset.examples = [self.dataset.examples[i] for i in keep]
        self.batch_size = vl.batch_size

    def __call__(self, model: Any) -> dict[str, float]:
        result = evaluate_vqa(model, self.dataset, self.majority, batch_size=self.batch_size)
        return {"val/vqa_accuracy": result["accuracy"], "val/vqa_majority": result["majority_accuracy"],
                **{f"val/vqa_{t}": r["accuracy"] for t, r in result["per_type"].items()}}

