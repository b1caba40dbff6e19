"""The training config: dataclasses that mirror configs/train.yaml and its groups, checked before any work.

    configs/train.yaml     stage, sources, init_from, resume, run_name, output_dir
    configs/model/*.yaml   -> agents.vla.config.VLAConfig   (backbone + head + loss + fine-tuning)
    configs/data/*.yaml    -> harness.data.config.DataConfig
    configs/optim/*.yaml   -> OptimConfig
    configs/trainer/*.yaml -> TrainerConfig
    configs/eval/*.yaml    -> RolloutConfig (the rollout callback; `eval: none` turns it off)

`TrainConfig.from_dict` rejects unknown keys at every level. `check_config` then checks what can be
checked without building anything: the dataset path, model/data agreement, the backbone family and
preset, the precision on the chosen device, the batch sources of the stage, the rollout tasks. The
window-vs-segment check reads the annotations only and happens when the datasets are opened, which the
trainer does before it builds the model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from agents.vla.config import VLAConfig, _from_dict
from harness.data.config import DataConfig

PRECISIONS = ("fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
STRATEGIES = ("ddp", "fsdp")
SCHEDULES = ("constant", "cosine")
BEST_METRICS = ("val_loss", "rollout_success", "vqa_accuracy")
STAGES = (1, 2)


@dataclass(frozen=True)
class OptimConfig:
    """AdamW (no decay on norms, biases and embeddings) and the learning-rate schedule."""

    lr: float = 2e-5
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    schedule: str = "constant"  # constant | cosine (after the warmup)
    warmup_steps: int = 0  # linear warmup over this many optimizer steps ...
    warmup_epochs: float = 0.0  # ... or over this fraction of an epoch (set one of the two)
    min_lr_ratio: float = 0.0  # cosine: the lr ends at min_lr_ratio * lr

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        for name in ("warmup_steps", "warmup_epochs"):  # null in a config means none
            object.__setattr__(self, name, getattr(self, name) or 0)
        if not self.lr > 0:
            raise ValueError(f"optim.lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"optim.weight_decay must be >= 0, got {self.weight_decay}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"optim.betas must be two numbers in [0, 1), got {list(self.betas)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"optim.schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.warmup_steps < 0 or self.warmup_epochs < 0:
            raise ValueError(f"optim.warmup_steps and warmup_epochs must be >= 0, got {self.warmup_steps}, {self.warmup_epochs}")
        if self.warmup_steps and self.warmup_epochs:
            raise ValueError("set optim.warmup_steps or optim.warmup_epochs, not both "
                             f"(got {self.warmup_steps} steps and {self.warmup_epochs} epochs; e.g. "
                             "optim.warmup_epochs=0 to warm up over steps)")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"optim.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")


@dataclass(frozen=True)
class TrainerConfig:
    """Loop length, batch, precision, clipping, intervals, device and the distributed strategy."""

    max_steps: int | None = 1000  # optimizer steps; or
    max_epochs: float | None = None  # epochs of the action data (set exactly one of the two)
    batch_size: int = 8  # per rank and micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    global_batch_size: int | None = None  # if set: grad_accum = global / (batch_size * world size)
    precision: str = "fp32"  # fp32 | bf16 (autocast, CPU or GPU) | fp16 (autocast + GradScaler, GPU only)
    max_grad_norm: float = 1.0  # clip the global grad norm to this; 0 = no clipping (the norm is logged anyway)
    seed: int = 0
    log_every: int = 10  # steps between metrics.jsonl / TensorBoard lines
    val_every: int = 500  # steps between validation passes (0 = only at the end)
    val_samples: int | None = 512  # validation windows (and VQA questions) per pass, evenly spread (null = all)
    ckpt_every: int = 1000  # steps between checkpoints (the last step is always saved)
    keep_last: int = 2  # step checkpoints kept (besides `best`); 0 = keep all
    best_metric: str = "val_loss"  # val_loss (lower is better) | rollout_success | vqa_accuracy (higher is better)
    num_workers: int = 2  # DataLoader worker processes per rank
    device: str = "auto"  # auto (cuda if available) | cpu | cuda (under torchrun: each rank's own GPU)
    strategy: str = "ddp"  # ddp | fsdp (torch fully_shard; for backbones too large to replicate)
    dist_timeout_s: float = 3600.0  # how long ranks wait for each other (rank 0's rollouts included)
    progress: bool = True  # tqdm bar on rank 0

    def __post_init__(self) -> None:
        if (self.max_steps is None) == (self.max_epochs is None):
            raise ValueError("set exactly one of trainer.max_steps and trainer.max_epochs "
                             f"(got max_steps={self.max_steps}, max_epochs={self.max_epochs})")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"trainer.max_steps must be >= 1, got {self.max_steps}")
        if self.max_epochs is not None and not self.max_epochs > 0:
            raise ValueError(f"trainer.max_epochs must be > 0, got {self.max_epochs}")
        for name in ("batch_size", "grad_accum", "log_every", "ckpt_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"trainer.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("val_every", "keep_last", "num_workers"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"trainer.{name} must be >= 0, got {getattr(self, name)}")
        if self.global_batch_size is not None and self.global_batch_size < 1:
            raise ValueError(f"trainer.global_batch_size must be >= 1 or null, got {self.global_batch_size}")
        if self.val_samples is not None and self.val_samples < 1:
            raise ValueError(f"trainer.val_samples must be >= 1 or null, got {self.val_samples}")
        if self.max_grad_norm < 0:
            raise ValueError(f"trainer.max_grad_norm must be >= 0 (0 disables clipping), got {self.max_grad_norm}")
        for name, allowed in (("precision", PRECISIONS), ("device", DEVICES), ("strategy", STRATEGIES),
                              ("best_metric", BEST_METRICS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"trainer.{name} must be one of {allowed}, got {getattr(self, name)!r}")

    def accumulation(self, world_size: int) -> int:
        """Micro-batches per optimizer step on each rank."""
        if self.global_batch_size is None:
            return self.grad_accum
        per_step = self.batch_size * world_size
        if self.global_batch_size % per_step:
            raise ValueError(
                f"trainer.global_batch_size={self.global_batch_size} is not a multiple of batch_size x world size = "
                f"{self.batch_size} x {world_size}; change one of them")
        return self.global_batch_size // per_step


@dataclass(frozen=True)
class RolloutConfig:
    """The rollout callback: simulator episodes every `every` steps, logged as success rates (rank 0)."""

    enabled: bool = False
    every: int = 1000  # steps between rollouts (and at the last step)
    mode: str = "single_task"  # single_task: `episodes` per task | chains: CALVIN's first `num_chains` chains
    tasks: tuple[str, ...] | None = None  # single_task: task names (null = every task a start condition allows)
    episodes: int = 1  # single_task: episodes per task
    num_chains: int = 2  # chains
    ep_len: int = 360  # steps per subtask
    seed: int = 0
    backend: str = "builtin"  # env backend
    scene: str = "D"
    execution: str = "replan"  # agent execution: replan | chunk | ensemble
    output: bool = False  # keep each rollout's results/report under <run>/rollouts/step_XXXXXXX

    def __post_init__(self) -> None:
        if self.tasks is not None:
            object.__setattr__(self, "tasks", tuple(self.tasks))
        if self.every < 1:
            raise ValueError(f"eval.every must be >= 1, got {self.every}")

    def settings(self) -> Any:
        """The evaluation settings (harness.eval.EvalSettings); in-process, no videos, no progress bar."""
        from harness.eval.evaluation import EvalSettings

        return EvalSettings(mode=self.mode, num_chains=self.num_chains, tasks=self.tasks,
                            episodes_per_task=self.episodes, ep_len=self.ep_len, workers=0, seed=self.seed,
                            progress=False)


@dataclass(frozen=True)
class SourceConfig:
    """One named batch source: its loss weight, its share of micro-batches (for a mixer) and its options."""

    weight: float = 1.0
    ratio: float = 1.0
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.weight < 0 or self.ratio < 0:
            raise ValueError(f"source weight and ratio must be >= 0, got {self.weight}, {self.ratio}")


@dataclass(frozen=True)
class TrainConfig:
    model: VLAConfig
    data: DataConfig
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: RolloutConfig = field(default_factory=RolloutConfig)
    # stage 1: vision-language only (sources: {vl}); stage 2: actions, optionally co-trained with vl
    stage: int = 2
    sources: dict[str, SourceConfig] = field(default_factory=lambda: {"action": SourceConfig()})
    init_from: str | None = None  # checkpoint folder whose weights start this run (no optimizer state)
    resume: str = "auto"  # auto: continue from output_dir's last checkpoint if any | never | a checkpoint folder
    output_dir: str = "runs/train/default"
    run_name: str = "default"

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"train config: unknown keys {unknown}; known keys are {sorted(known)}")
        for required in ("model", "data"):
            if required not in d:
                raise ValueError(f"train config: missing the `{required}` section")
        kw = dict(d)
        kw["model"] = VLAConfig.from_dict(d["model"])
        kw["data"] = DataConfig.from_dict(d["data"])
        for name, typ in (("optim", OptimConfig), ("trainer", TrainerConfig), ("eval", RolloutConfig)):
            if name in d:
                kw[name] = _from_dict(typ, d[name] or {}, name)
        if "sources" in d:
            if not isinstance(d["sources"], Mapping) or not d["sources"]:
                raise ValueError(f"sources: expected a non-empty mapping of source name -> settings, got {d['sources']!r}")
            kw["sources"] = {str(k): _from_dict(SourceConfig, v or {}, f"sources.{k}") for k, v in d["sources"].items()}
        return cls(**kw)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["model"], d["data"] = self.model.to_dict(), self.data.to_dict()
        d["optim"]["betas"] = list(self.optim.betas)
        if self.eval.tasks is not None:
            d["eval"]["tasks"] = list(self.eval.tasks)
        return d


def resolve_device(trainer: TrainerConfig) -> str:
    import torch

    if trainer.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return trainer.device


def check_config(cfg: TrainConfig) -> None:
    """Everything that can be wrong without reading data or building the model: a ValueError naming it."""
    import torch

    from agents.vla.backbones import adapter_class
    from agents.vla.tiny import TINY_PRESETS
    from harness.train import cotraining  # noqa: F401  (registers the `vl` source and the mixer)
    from harness.train.sources import check_sources

    # the model: family and preset known, a local backbone folder present
    bb = cfg.model.backbone
    adapter_class(bb.family)
    if bb.tiny is not None and bb.tiny not in TINY_PRESETS:
        raise ValueError(f"model.backbone.tiny: unknown tiny preset {bb.tiny!r}; known: {sorted(TINY_PRESETS)}")
    if bb.tiny is not None and TINY_PRESETS[bb.tiny].family != bb.family:
        raise ValueError(f"model.backbone: tiny preset {bb.tiny!r} is a {TINY_PRESETS[bb.tiny].family!r} model, "
                         f"but family is {bb.family!r}")
    if bb.pretrained is not None and _looks_local(bb.pretrained) and not Path(bb.pretrained).is_dir():
        raise ValueError(f"model.backbone.pretrained: folder {bb.pretrained} does not exist")

    # the data: present, and what the model reads is in the batch
    if not Path(cfg.data.path).is_dir():
        raise ValueError(f"data.path: dataset folder {cfg.data.path} does not exist (set data.path=... or the "
                         "CALVIN_DATASET environment variable)")
    if "action" in cfg.sources:
        for key in ("window_size", "fwd_pred_next_n"):
            if getattr(cfg.model, key) != getattr(cfg.data, key):
                raise ValueError(f"model.{key}={getattr(cfg.model, key)} differs from data.{key}={getattr(cfg.data, key)}: "
                                 "the model is trained on the data's windows, set both to the same value")
        for key in ("use_gripper_image", "use_proprio"):
            if getattr(cfg.model, key) and not getattr(cfg.data, key):
                raise ValueError(f"model.{key}=true needs data.{key}=true (the batch would not carry it)")

    # precision and device
    device = resolve_device(cfg.trainer)
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("trainer.device=cuda but CUDA is not available (use trainer.device=cpu or auto)")
    if cfg.trainer.precision == "fp16" and device != "cuda":
        raise ValueError("trainer.precision=fp16 needs a GPU (its GradScaler is CUDA-only); use bf16 or fp32 on CPU")
    if cfg.trainer.precision == "bf16" and device == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError("trainer.precision=bf16: this GPU does not support bfloat16; use fp16")
    if cfg.trainer.precision == "fp16" and bb.dtype == "float16" and cfg.model.finetune.mode != "frozen":
        raise ValueError("trainer.precision=fp16 with model.backbone.dtype=float16: GradScaler cannot unscale fp16 "
                         "gradients of trainable weights; load the backbone in float32 (autocast runs it in fp16)")

    # the rest
    if cfg.stage not in STAGES:
        raise ValueError(f"stage must be 1 (vision-language only) or 2 (actions), got {cfg.stage!r}")
    check_sources(cfg)
    if cfg.trainer.best_metric == "vqa_accuracy" and "vl" not in cfg.sources:
        raise ValueError("trainer.best_metric=vqa_accuracy needs a vision-language source (sources=vl or action_vl)")
    if cfg.trainer.best_metric == "rollout_success" and not cfg.eval.enabled:
        raise ValueError("trainer.best_metric=rollout_success needs the rollout callback (eval=single_task or eval=chains)")
    if cfg.eval.enabled:
        if cfg.trainer.strategy == "fsdp" and cfg.eval.every % cfg.trainer.ckpt_every:
            raise ValueError(f"with trainer.strategy=fsdp rollouts load the step's checkpoint: eval.every={cfg.eval.every} "
                             f"must be a multiple of trainer.ckpt_every={cfg.trainer.ckpt_every}")
        cfg.eval.settings().jobs()  # unknown task names, impossible tasks, bad mode
    if cfg.init_from is not None and not Path(cfg.init_from).is_dir():
        raise ValueError(f"init_from: checkpoint folder {cfg.init_from} does not exist")
    if cfg.resume not in ("auto", "never") and not Path(cfg.resume).is_dir():
        raise ValueError(f"resume: expected auto, never or a checkpoint folder; {cfg.resume} is none of them")


def _looks_local(name: str) -> bool:
    """A folder rather than a hub id ("org/name"): absolute, relative with ./ or ../, or ~."""
    return name.startswith(("/", "./", "../", "~")) or Path(name).exists()
