"""AdamW with decay and no-decay parameter groups, and the learning-rate schedule.

No weight decay on norms, biases and embeddings: a parameter with fewer than 2 dimensions (biases, norm
scales, CLIP's class embedding) or one held by an `nn.Embedding` (word and position embeddings) or by
`AddedTokenEmbedding` (the [LRN]/[PROPRIO]/action-token table). Decaying those pulls them towards zero
for no regularising benefit. A tied LM head is the word embedding, so it is not decayed either.

Schedule: linear warmup from 0 over `warmup_steps` (or `warmup_epochs` x optimizer steps per epoch),
then constant, or cosine from lr down to `min_lr_ratio * lr` at the last step, or `wsd` (warmup-stable-decay):
constant, then the same cosine over the last `decay_steps` steps only, so that a constant-lr run carried on
(resume=) with more steps and a decay ends like a decayed run. It is a LambdaLR whose factor is a pure
function of the step; a resumed run takes the step from its checkpoint and the lr and schedule from its own
config (`restore_schedule`), so a run carried on may change them.
"""

from __future__ import annotations

import math
import torch
from torch import nn

from agents.vla.tokens import AddedTokenEmbedding
from harness.train.config import OptimConfig

NO_DECAY_MODULES = (nn.Embedding, AddedTokenEmbedding)


def no_decay(module: nn.Module, param: nn.Parameter) -> bool:
    return param.ndim < 2 or isinstance(module, NO_DECAY_MODULES) or "norm" in type(module).__name__.lower()


def parameter_groups(model: nn.Module) -> tuple[list[str], list[str]]:
    """Names of the trainable parameters with and without weight decay, in `named_parameters` order.

    A parameter shared by several modules (tied weights) is listed once, under its first name, and is
    without decay if any module holding it is an embedding."""
    exempt: set[int] = set()
    for module in model.modules():
        for p in module.parameters(recurse=False):
            if no_decay(module, p):
                exempt.add(id(p))
    decay, keep = [], []
    for name, p in model.named_parameters():  # named_parameters lists a shared parameter once
        if p.requires_grad:
            (keep if id(p) in exempt else decay).append(name)
    return decay, keep


def build_optimizer(model: nn.Module, cfg: OptimConfig, fused: bool | None = None) -> torch.optim.AdamW:
    """AdamW over `model`'s trainable parameters; each group records its parameter names (`names`)."""
    decay, keep = parameter_groups(model)
    params = dict(model.named_parameters())
    groups = [
        {"params": [params[n] for n in decay], "names": decay, "weight_decay": cfg.weight_decay},
        {"params": [params[n] for n in keep], "names": keep, "weight_decay": 0.0},
    ]
    if not decay and not keep:
        raise ValueError("the model has no trainable parameters (check model.finetune)")
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, fused=fused)


def warmup_steps(cfg: OptimConfig, steps_per_epoch: float) -> int:
    return cfg.warmup_steps or int(round(cfg.warmup_epochs * steps_per_epoch))


def schedule_warnings(cfg: OptimConfig, total_steps: int, steps_per_epoch: float) -> list[str]:
    """What the schedule does in a run of `total_steps` that its settings do not say (a short run of a config made
    for a long one): a warmup that never ends, a decay longer than what follows the warmup."""
    warmup = warmup_steps(cfg, steps_per_epoch)
    if warmup >= total_steps:
        return [f"the warmup ({warmup} optimizer steps) is as long as the run ({total_steps}) or longer: the lr never "
                f"reaches optim.lr={cfg.lr} (set optim.warmup_steps or optim.warmup_epochs shorter)"]
    if cfg.schedule == "wsd" and cfg.decay_steps > total_steps - warmup:
        return [f"optim.decay_steps={cfg.decay_steps} is longer than the run after its warmup ({total_steps - warmup} "
                "steps): the lr decays from the warmup's end, a plain cosine"]
    return []


def lr_factor(step: int, warmup: int, total: int, schedule: str, min_ratio: float, decay_steps: int = 0) -> float:
    """The lr multiplier used for optimizer step `step` (0-based)."""
    if step < warmup:
        return (step + 1) / warmup
    decay_from = warmup if schedule == "cosine" else max(total - decay_steps, warmup)
    if schedule == "constant" or step < decay_from:
        return 1.0
    span = max(total - decay_from - 1, 1)
    progress = min((step - decay_from) / span, 1.0)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int,
                    steps_per_epoch: float) -> torch.optim.lr_scheduler.LambdaLR:
    warmup = warmup_steps(cfg, steps_per_epoch)

    def factor(step: int) -> float:
        return lr_factor(step, warmup, total_steps, cfg.schedule, cfg.min_lr_ratio, cfg.decay_steps)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def restore_schedule(scheduler: torch.optim.lr_scheduler.LambdaLR, state: dict) -> None:
    """A checkpoint's scheduler state under this run's lrs and schedule: the saved step, and each group's lr for
    the next step set from this run's base lr and factor (the saved state holds the old run's; with the same
    config the two are equal, bit for bit)."""
    base_lrs = list(scheduler.base_lrs)  # this run's: the optimizer's groups as built from its config
    scheduler.load_state_dict(state)
    scheduler.base_lrs = base_lrs
    scheduler.last_epoch -= 1
    scheduler.step()  # sets every group's lr to base * factor(saved step), as the saved run's last step did
