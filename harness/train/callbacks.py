"""What runs between training steps: the validation loss and the optional rollout callback.

Validation: a fixed, evenly spread subset of the validation windows (`trainer.val_samples`), split over
the ranks, no augmentation; the loss parts are summed weighted by their item counts and reduced over the
ranks, so the numbers equal a one-process pass over the same windows.

Rollouts (`rollout=single_task` or `rollout=chains`): on rank 0, K episodes in the simulator with the model as
it is (a VLAAgent around the in-memory model and the data's normaliser) or, under FSDP, loaded from the
checkpoint just written; `harness.eval` runs them in this process (workers=0). The other ranks wait at
the next collective. Each logged rate and score comes with its 95 % interval's bounds (`..._ci_low`,
`..._ci_high`): a handful of rollout episodes is a noisy estimate, and the bounds say how noisy. The
training RNG states are restored afterwards, so a rollout does not change the run it observes.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from harness.data.normalization import ActionNormalizer
from harness.data.windows import collate_windows
from harness.train.config import RolloutConfig
from harness.ranks import DistInfo
from harness.train.distributed import all_reduce_sum, hide_ranks
from harness.train.sources import LOSSES
from harness.train.state import rng_state, set_rng_state

VAL_KEYS = ("loss", "loss_arm", "loss_gripper", "acc_gripper", "loss_state")


def validation_indices(n: int, samples: int | None) -> np.ndarray:
    """`samples` window indices spread evenly over [0, n) (all of them when samples is None or >= n)."""
    if samples is None or samples >= n:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, samples).round().astype(np.int64))


def to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    return batch


@torch.no_grad()
def validate(net: nn.Module, dataset: Dataset, indices: np.ndarray, batch_size: int, num_workers: int,
             dist: DistInfo, device: torch.device, autocast: Any, pad_batches: bool) -> dict[str, float]:
    """Mean action loss parts over `indices` of `dataset` (the windows of all ranks together).

    pad_batches: every rank runs the same number of forwards (FSDP's forward is a collective); the
    padding batches count with weight 0."""
    mine = indices[dist.rank :: dist.world_size]
    loader = DataLoader(Subset(dataset, mine.tolist()), batch_size=batch_size, num_workers=num_workers,
                        collate_fn=collate_windows, generator=torch.Generator())
    per_rank = -(-len(indices) // dist.world_size)
    n_batches = -(-per_rank // batch_size) if pad_batches else len(loader)
    sums = torch.zeros(len(VAL_KEYS) + 1, dtype=torch.float64)
    net.eval()
    first = None
    for batch in loader:
        first = batch if first is None else first
        sums += _weighted(net, to_device(batch, device), autocast, 1.0)
    for _ in range(len(loader), n_batches):  # padding (FSDP only)
        batch = first if first is not None else collate_windows([dataset[int(indices[0])]])
        _weighted(net, to_device(batch, device), autocast, 0.0)
    net.train()
    total = all_reduce_sum(sums, dist)
    count = float(total[-1])
    return {f"val/{k}": float(total[i]) / count for i, k in enumerate(VAL_KEYS)} if count else {}


def _weighted(net: nn.Module, batch: Any, autocast: Any, weight: float) -> torch.Tensor:
    with autocast:
        out = net("action", batch)
    n = LOSSES["action"].count(batch) * weight
    return torch.tensor([float(out[k]) * n for k in VAL_KEYS] + [n], dtype=torch.float64)


def rollout(model: nn.Module, normalizer: ActionNormalizer, cfg: RolloutConfig, output_dir: Path | None,
            checkpoint: Path | None = None) -> dict[str, float]:
    """Success rates of the model in the simulator (rank 0); logged as rollout/...

    `rollout/score` is what `trainer.best_metric=rollout_success` ranks by: the success rate over all
    episodes (single_task), or CALVIN's average successful sequence length (chains)."""
    from agents.vla.agent import VLAAgent, load_agent
    from harness.eval.evaluation import run_evaluation

    saved = rng_state()
    was_training = model.training
    execution = cfg.agent_execution()
    try:
        if checkpoint is not None:  # in the model's own device and dtype, as the in-memory path (not "auto")
            weights = next(model.parameters())
            agent = load_agent(checkpoint, device=str(weights.device), dtype=weights.dtype, **asdict(execution))
        else:
            agent = VLAAgent(model, normalizer, execution)
        with hide_ranks():
            results = run_evaluation(cfg.settings, cfg.env, agent, output_dir, print_summary=False)
    finally:
        model.train(was_training)
        set_rng_state(saved)
    return rollout_metrics(results, cfg.settings.mode)


def rollout_metrics(results: dict[str, Any], mode: str) -> dict[str, float]:
    """The rollout/... scalars of an evaluation's results, each rate and score with its 95 % interval's
    bounds beside it as <name>_ci_low / <name>_ci_high (harness.eval.stats; Wilson for rates, BCa bootstrap
    over chains for avg_seq_len)."""
    intervals = results["intervals"]
    if mode == "single_task":
        values = {"score": (results["success_rate"], intervals["success_rate"]),
                  "success_rate": (results["success_rate"], intervals["success_rate"])}
        values.update({t: (v["rate"], intervals["tasks"][t]) for t, v in results["tasks"].items()})
    else:
        values = {"score": (results["avg_seq_len"], intervals["avg_seq_len"]),
                  "avg_seq_len": (results["avg_seq_len"], intervals["avg_seq_len"])}
        values.update({f"chain_sr_{k}": (v, intervals["chain_sr"][k]) for k, v in results["chain_sr"].items()})
    out: dict[str, float] = {}
    for name, (value, interval) in values.items():
        out[f"rollout/{name}"] = value
        if interval is not None:
            out[f"rollout/{name}_ci_low"], out[f"rollout/{name}_ci_high"] = interval["low"], interval["high"]
    return out
