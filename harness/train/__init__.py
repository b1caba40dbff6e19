"""The training loop: a VLM + a CALVIN-format dataset -> a VLA checkpoint (docs/TRAINING.md).

    python -m harness.train [hydra overrides]                    # or scripts/train.sh
    torchrun --nproc_per_node N -m harness.train [overrides]     # DDP / FSDP, one or many nodes

    from harness.train import TrainConfig, train
    summary = train(TrainConfig.from_dict(cfg))

Modules:
    config.py           dataclass configs mirroring configs/train.yaml's groups
    checks.py           check_config: what can be wrong before any work
    trainer.py          train(): the loop, top to bottom
    sources.py          named batch sources: their losses, the stream that serves the configured sources
    streams.py          resumable streams of batches: the action windows' (rank-independent data order)
    cotraining.py       the vision-language stream, the mixer of several sources, VQA validation
    optim.py            AdamW parameter groups, warmup + constant/cosine/wsd schedule
    distributed.py      the process group for training (ranks: harness/ranks.py), DDP / FSDP wrapping, JSON collectives
    state.py            trainer state for exact resume (safetensors + JSON), RNG states
    origin.py           origin.json: the other run's checkpoint a run started from (resume=, init_from)
    run_checkpoints.py  the run's step folders, `last` and `best`, keep-last-k (one folder: agents/vla/checkpoint.py)
    callbacks.py        validation loss, rollout callback
    metrics.py          metrics.jsonl + TensorBoard, step timing
    sweep.py            a hydra multirun's results -> sweep.csv + sweep.md
    curve.py            a run's learning curve: its checkpoints evaluated against their training time
    study.py            the structure study: model structures under one CPU budget -> study.csv + study.md
    tables.py           results tables as CSV + Markdown (sweep, curve, study)

Names are exported lazily, so importing this package imports neither torch nor transformers.
"""

from importlib import import_module
from typing import Any

_EXPORTS = {"TrainConfig": "config", "check_config": "checks", "train": "trainer", "write_sweep_table": "sweep"}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'harness.train' has no attribute {name!r}")
    return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)


__all__ = sorted(_EXPORTS)
