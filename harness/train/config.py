"""The training config: the dataclasses behind configs/train.yaml and its groups, checked before any work.

    configs/train.yaml       stage, sources, init_from, resume, run_name, output_dir
    configs/model/*.yaml     -> agents.vla.config.VLAConfig   (backbone + head + loss + fine-tuning; window, chunk)
    configs/data/*.yaml      -> harness.data.config.DataConfig (where the data is, how windows are drawn)
    configs/optim/*.yaml     -> OptimConfig
    configs/trainer/*.yaml   -> TrainerConfig
    configs/rollout/*.yaml   -> RolloutConfig (rollouts during training; `rollout: none` turns them off)
    configs/sources/*.yaml   -> SourceConfig per batch source

Each group's yaml files build on its dataclass's defaults (`store_train_defaults` registers them with
hydra), so a default lives in its dataclass only. `TrainConfig.from_dict` rejects unknown keys and
mistyped values at every level; harness/train/checks.py's `check_config` then checks what can be checked
without building anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from agents.vla.agent import ExecutionConfig
from agents.vla.config import VLAConfig
from harness.data.config import DataConfig
from harness.data.vl.config import VLDataConfig
from harness.eval.config import IN_PROCESS, EvalSettings, split_settings, store_eval_defaults
from harness.eval.specs import EnvConfig
from harness.config_errors import resolve_config
from harness.hydra_app import config_dir, store_defaults
from harness.strict_config import defaults_of, from_mapping, plain

PRECISIONS = ("fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
STRATEGIES = ("ddp", "fsdp")
SCHEDULES = ("constant", "cosine", "wsd")
BEST_METRICS = ("val_loss", "rollout_success", "vqa_accuracy")
STAGES = (1, 2)


@dataclass(frozen=True)
class OptimConfig:
    """AdamW (no decay on norms, biases and embeddings) and the learning-rate schedule. Defaults: RoboVLMs'
    CALVIN recipe (lr 2e-5, no decay, linear warmup over a quarter epoch, then constant)."""

    lr: float = 2e-5
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    schedule: str = "constant"  # constant | cosine (after the warmup) | wsd (constant, then cosine over decay_steps)
    warmup_steps: int | None = 0  # linear warmup over this many optimizer steps ...
    warmup_epochs: float | None = 0.25  # ... or over this fraction of an epoch (set one of the two; null = 0)
    min_lr_ratio: float = 0.0  # cosine, wsd: the lr ends at min_lr_ratio * lr
    decay_steps: int = 0  # wsd: the last steps of the run, over which the lr falls by cosine (warmup-stable-decay)

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        for name in ("warmup_steps", "warmup_epochs"):  # null in a config means none
            object.__setattr__(self, name, getattr(self, name) or 0)
        if not self.lr > 0:
            raise ValueError(f"optim.lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"optim.weight_decay must be >= 0, got {self.weight_decay}")
        if not self.eps > 0:  # torch's AdamW would refuse it without naming the setting
            raise ValueError(f"optim.eps must be > 0, got {self.eps}")
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
        if (self.decay_steps < 2) if self.schedule == "wsd" else (self.decay_steps != 0):
            raise ValueError(f"optim.decay_steps is the wsd schedule's and must then be >= 2 (got schedule "
                             f"{self.schedule!r}, decay_steps {self.decay_steps}; e.g. optim.schedule=wsd "
                             "optim.decay_steps=4000 to decay over the last 4,000 steps)")


@dataclass(frozen=True)
class TrainerConfig:
    """Loop length, batch, precision, clipping, intervals, device and the distributed strategy.
    Global batch = batch_size x grad_accum x ranks."""

    max_steps: int | None = None  # optimizer steps; or
    max_epochs: float | None = 5  # epochs of the action data (set exactly one of the two)
    # a CPU budget: training also stops after the step at which its steps have used this many CPU seconds
    # (this process's threads, summed over ranks; kept in checkpoints, so a resumed run spends the rest of
    # the same budget). DataLoader workers are other processes: num_workers=0 counts data loading too.
    max_cpu_s: float | None = None
    batch_size: int = 8  # per rank and micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    global_batch_size: int | None = None  # if set: grad_accum = global / (batch_size * world size), the same on any number of ranks
    precision: str = "bf16"  # fp32 | bf16 (autocast, CPU or GPU) | fp16 (autocast + GradScaler, GPU only)
    max_grad_norm: float = 1.0  # clip the global grad norm to this; 0 = no clipping (the norm is logged anyway)
    # > 0: checkpoints, validation and rollouts use an exponential moving average of the weights with this decay
    # (harness.train.ema; e.g. 0.999); the raw weights go on training and are kept beside it for resuming
    ema_decay: float = 0.0
    seed: int = 0
    log_every: int = 10  # steps between metrics.jsonl / TensorBoard lines
    val_every: int = 1000  # steps between validation passes (0 = only at the end)
    val_samples: int | None = 512  # validation windows (and VQA questions) per pass, evenly spread (null = all)
    ckpt_every: int = 1000  # steps between checkpoints (the last step is always saved)
    keep_last: int = 3  # step checkpoints kept (besides `best`); 0 = keep all
    best_metric: str = "val_loss"  # val_loss (lower is better) | rollout_success (needs rollouts) | vqa_accuracy (higher is better)
    num_workers: int = 4  # DataLoader worker processes per rank
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
        if self.max_cpu_s is not None and not self.max_cpu_s > 0:
            raise ValueError(f"trainer.max_cpu_s must be > 0 CPU seconds (or null for no budget), got {self.max_cpu_s}")
        for name in ("batch_size", "grad_accum", "log_every", "ckpt_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"trainer.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("val_every", "keep_last", "num_workers"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"trainer.{name} must be >= 0, got {getattr(self, name)}")
        if self.global_batch_size is not None and self.global_batch_size < 1:
            raise ValueError(f"trainer.global_batch_size must be >= 1 or null, got {self.global_batch_size}")
        if self.global_batch_size is not None and self.grad_accum != 1:
            raise ValueError(f"trainer.global_batch_size={self.global_batch_size} sets the accumulation itself (global / "
                             f"(batch_size x ranks)): trainer.grad_accum={self.grad_accum} would be ignored; set one of them")
        if not self.dist_timeout_s > 0:
            raise ValueError(f"trainer.dist_timeout_s must be > 0 seconds, got {self.dist_timeout_s}")
        if self.val_samples is not None and self.val_samples < 1:
            raise ValueError(f"trainer.val_samples must be >= 1 or null, got {self.val_samples}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"trainer.ema_decay must be in [0, 1) (0: no weight average), got {self.ema_decay}")
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
    """Rollouts during training (hydra group `rollout`): every `every` steps (and at the last), rank 0
    evaluates the model as it is in the simulator, in this process, and logs the success rates.

    The group holds the evaluation's own settings beside these fields: EvalSettings' (mode, num_chains,
    tasks, episodes_per_task, ep_len, seed, ...) as `rollout.<name>`, the env as `rollout.env.*` (EnvConfig),
    so a setting is spelled as in `python -m harness.eval` with `rollout.` before it."""

    enabled: bool = False
    every: int = 1000  # steps between rollouts
    output: bool = False  # keep each rollout's results/report under <run>/rollouts/step_XXXXXXX
    # the VLA agent's execution (agents.vla.agent.ExecutionConfig, configs/agent/vla.yaml): replan | chunk |
    # ensemble, the actions of a chunk executed (chunk), the ensemble's decay
    execution: str = ExecutionConfig.execution
    exec_horizon: int = ExecutionConfig.exec_horizon
    ensemble_decay: float = ExecutionConfig.ensemble_decay
    env: EnvConfig = field(default_factory=EnvConfig)
    settings: EvalSettings = field(default_factory=lambda: EvalSettings(**IN_PROCESS))

    # the group's keys that are not EvalSettings'
    OWN = ("enabled", "every", "output", "execution", "exec_horizon", "ensemble_decay", "env")

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ValueError(f"rollout.every must be >= 1, got {self.every}")
        try:
            self.agent_execution()
        except ValueError as e:
            raise ValueError(f"rollout: {e}") from None
        if self.settings.workers != 0:
            raise ValueError(f"rollout.workers: rollouts run the model in the training process (workers=0), "
                             f"got {self.settings.workers}")

    def agent_execution(self) -> ExecutionConfig:
        return ExecutionConfig(execution=self.execution, exec_horizon=self.exec_horizon,
                               ensemble_decay=self.ensemble_decay)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RolloutConfig":
        own, settings = split_settings(d, cls.OWN, "rollout")
        return from_mapping(cls, {**own, "settings": settings}, "rollout")

    def to_dict(self) -> dict[str, Any]:
        return {**{k: plain(getattr(self, k)) for k in self.OWN}, **plain(self.settings)}


@dataclass(frozen=True)
class SourceConfig:
    """One named batch source: its loss weight, its share of micro-batches (for a mixer) and its options."""

    weight: float = 1.0
    ratio: float = 1.0
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.weight < 0 or self.ratio < 0:
            raise ValueError(f"source weight and ratio must be >= 0, got {self.weight}, {self.ratio}")


# old spellings -> the settings that replaced them (command-line overrides and config files)
RENAMED = {
    "eval": "rollout (the group of rollouts during training: rollout=single_task | chains | none)",
    "eval.scene": "rollout.env.scene", "eval.backend": "rollout.env.backend",
    "eval.episodes": "rollout.episodes_per_task", "eval.": "rollout.",
    "data.window_size": "model.window_size (the data's windows follow the model)",
    "data.fwd_pred_next_n": "model.chunk_size (the data's windows follow the model)",
    "data.use_gripper_image": "model.use_gripper_image (the data's windows follow the model)",
    "data.use_proprio": "model.use_proprio (the data's windows follow the model)",
    "model.fwd_pred_next_n": "model.chunk_size (RoboVLMs' fwd_pred_next_n)",
}
TOP_LEVEL = ("stage", "init_from", "resume", "output_dir", "run_name")  # train.yaml's own keys


@dataclass(frozen=True)
class TrainConfig:
    model: VLAConfig
    data: DataConfig
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    # stage 1: vision-language only (sources: {vl}); stage 2: actions, optionally co-trained with vl
    stage: int = 2
    sources: dict[str, SourceConfig] = field(default_factory=lambda: {"action": SourceConfig()})
    init_from: str | None = None  # checkpoint folder whose weights start this run (no optimizer state)
    resume: str = "auto"  # auto: continue from output_dir's last checkpoint if any | never | a checkpoint folder
    output_dir: str = "runs/train/default"
    run_name: str = "default"

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainConfig":
        if not isinstance(d, Mapping):
            raise ValueError(f"train config: expected a mapping, got {type(d).__name__}")
        for required in ("model", "data"):
            if required not in d:
                raise ValueError(f"train config: missing the `{required}` section")
        sections = dict(d)
        sections["model"] = VLAConfig.from_dict(d["model"])
        data = d["data"]
        for key in data if isinstance(data, Mapping) else ():
            if f"data.{key}" in RENAMED:
                raise ValueError(f"data.{key} is now {RENAMED[f'data.{key}']}")
        if "rollout" in d:
            sections["rollout"] = RolloutConfig.from_dict(d["rollout"])
        if "sources" in d and (not isinstance(d["sources"], Mapping) or not d["sources"]):
            raise ValueError(f"sources: expected a non-empty mapping of source name -> settings, got {d['sources']!r}")
        return from_mapping(cls, sections, "", renamed=RENAMED)

    def to_dict(self) -> dict[str, Any]:
        d = plain(self)
        d["model"], d["data"], d["rollout"] = self.model.to_dict(), self.data.to_dict(), self.rollout.to_dict()
        return d


def store_train_defaults() -> None:
    """The defaults configs/train.yaml and its groups build on, from the dataclasses (and the evaluation's,
    for the env group)."""
    store_eval_defaults()
    store_defaults("train_settings", {k: v for k, v in defaults_of(TrainConfig).items() if k in TOP_LEVEL})
    store_defaults("base", VLAConfig().to_dict(), group="model")
    store_defaults("base", defaults_of(DataConfig), group="data")
    store_defaults("vl_base", defaults_of(VLDataConfig), group="data")
    store_defaults("base", plain(OptimConfig()), group="optim")
    store_defaults("base", plain(TrainerConfig()), group="trainer")
    store_defaults("base", RolloutConfig().to_dict(), group="rollout")


def compose_config(overrides: Sequence[str] = ()) -> dict[str, Any]:
    """configs/train.yaml with `overrides` (key=value, as on the command line), resolved: what
    `python -m harness.train` parses, for Python callers (tests, benchmarks). Set `output_dir` (hydra's
    run folder exists only in a hydra run)."""
    from hydra import compose, initialize_config_dir

    store_train_defaults()
    with initialize_config_dir(config_dir=config_dir(), version_base=None):
        return resolve_config(compose("train", overrides=list(overrides)))


def resolve_device(trainer: TrainerConfig) -> str:
    import torch

    if trainer.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return trainer.device
