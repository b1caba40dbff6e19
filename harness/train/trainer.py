"""The training loop: a VLM and a CALVIN-format dataset in, a VLA checkpoint out. Read it top to bottom.

    from harness.train import TrainConfig, train
    summary = train(TrainConfig.from_dict(resolved_hydra_config))

`train` checks the config, joins the ranks (if torchrun started it), opens the data, builds the model
(from `init_from`'s weights or the last checkpoint when resuming), wraps it (DDP / FSDP), and then, per
optimizer step: draws `accum` micro-batches of named sources, runs each source's loss with its weight,
reduces the gradients, logs the norm before clipping, clips, steps AdamW, the GradScaler and the
schedule; logs, validates, saves and rolls out on their intervals. See docs/TRAINING.md.

Micro-batch losses are means over their items (e.g. unmasked action slots); each is scaled by its share
of its source's items in the whole global batch (all micro-batches on all ranks), so the step's gradient is the
gradient of each source's mean over the global batch, whatever the split into ranks and micro-batches, times
the source's weight (and, with several sources, by how far the step's micro-batches of the source are from
their expected share: `loss_scales`).
"""

from __future__ import annotations

import errno
import json
import math
import os
from contextlib import nullcontext, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn
from tqdm import tqdm

from agents.vla.checkpoint import inspect_checkpoint, load_weights, save_checkpoint, unique_state_dict
from agents.vla.layout import checkpoint_digest
from agents.vla.finetune import freeze_unreached
from agents.vla.model import VLAModel
from harness.config_errors import ConfigError, config_errors
from harness.data.config import build_dataset, make_normalizer
from harness.data.normalization import ActionNormalizer
from harness.data.windows import collate_windows
from harness.durable_files import atomic_write_text
from harness.folder_lock import FolderBusy, FolderLock
from harness.ranks import DistInfo, barrier, broadcast_json, rank_device, shutdown
from harness.train import distributed as D
from harness.train.callbacks import rollout, to_device, validate, validation_indices
from harness.train.run_checkpoints import LAST, RunCheckpoints, step_name
from harness.train.checks import check_config, check_stored_image_sizes
from harness.train.config import TrainConfig, resolve_device
from harness.train.cotraining import VQAValidation
from harness.train.ema import WeightAverage
from harness.train.metrics import CHECKPOINT_WEIGHTS, MetricsLogger, StepTimer
from harness.train.optim import build_optimizer, build_scheduler, restore_schedule, schedule_warnings
from harness.train.origin import record_origin
from harness.train.sources import LOSSES, SourceLosses, build_stream, source_fractions
from harness.train.streams import EpochSeeded
from harness.train.state import (STATE_JSON, full_weights, load_optimizer_state, load_raw_weights,
                                 load_trainer_state, optimizer_state, record_best, rng_state, save_raw_weights,
                                 save_trainer_state, seed_all, set_rng_state)

ACTION_PARTS = ("loss_arm", "loss_gripper", "acc_gripper", "loss_state")
SUMMARY = "summary.json"
SUMMARY_ASIDE = "summary.before_resume.json"  # a resumed run's old summary until it ends (or finds it had ended)
RUN_BUSY = "trained by another harness.train"  # the run folder's FolderLock: one training writes a run folder
NO_LOCKS = (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP)  # flock not supported where the run folder is


def train(cfg: TrainConfig, overrides: list[str] | None = None) -> dict[str, Any]:
    """Train as configured; returns the run summary (rank 0; {} on the other ranks). Resumable."""
    with config_errors():
        check_config(cfg)
    device_kind = resolve_device(cfg.trainer)
    dist = D.setup(device_kind, cfg.trainer.dist_timeout_s)
    try:
        # every rank runs rank 0's resolved config (run folder names with a timestamp, env variables)
        cfg = TrainConfig.from_dict(broadcast_json(cfg.to_dict(), dist))
        run_dir = Path(cfg.output_dir)
        created = not run_dir.exists()
        lock = lock_run(run_dir, dist)
        last_before = _last_checkpoint_id(run_dir) if dist.is_main else None
        try:
            return _train(cfg, dist, device_kind, overrides or [])
        except BaseException:
            if dist.is_main:
                _put_summary_back(run_dir, last_before)
            raise
        finally:
            if lock is not None:
                lock.release()
                if created:  # a refused config leaves no folder behind (from Python: hydra writes .hydra/ first)
                    with suppress(OSError):  # not empty, or another training's lock file came meanwhile
                        run_dir.rmdir()
    finally:
        shutdown(dist)


def lock_run(run_dir: Path, dist: DistInfo) -> FolderLock | None:
    """Rank 0 holds the run folder's lock for the whole training (None on the other ranks): a second training
    of the same folder would interleave checkpoints and metrics, and a learning curve following the run
    (harness.train.curve --follow) knows from a free lock that no training is writing it any more."""
    lock, refusal = None, None
    if dist.is_main:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            lock = FolderLock(run_dir, RUN_BUSY).acquire()
        except FolderBusy as e:
            refusal = f"output_dir: {e}"
        except OSError as e:
            if e.errno not in NO_LOCKS:
                refusal = f"output_dir: {run_dir}: {e}"
            else:  # a file system without flock (some network mounts): trained as before, unguarded
                print(f"warning: {run_dir} cannot be locked ({e}): nothing stops a second training of this folder, "
                      "and harness.train.curve --follow takes it for stopped (run the curve after it)", flush=True)
    refusal = broadcast_json(refusal, dist)  # every rank stops, not only the one that tried
    if refusal is not None:
        raise ConfigError(refusal)
    return lock


def _train(cfg: TrainConfig, dist: DistInfo, device_kind: str, overrides: list[str]) -> dict[str, Any]:
    tc = cfg.trainer
    device = torch.device(rank_device(device_kind, dist))  # under torchrun, "cuda" is this rank's GPU
    run_dir = Path(cfg.output_dir)
    ckpts = RunCheckpoints(run_dir / "checkpoints", tc.keep_last)

    # ---- what is known before any work: the schedule of batches, where to resume from, the data
    with config_errors():
        accum = tc.accumulation(dist.world_size)
        resume_from = _resume_point(cfg, ckpts, dist)
    # a resumed run is unfinished until it decides otherwise: its old summary is set aside before any slow setup,
    # so that a learning curve following the run (harness.train.curve --follow, which stops at the summary) does
    # not stop at the old end when the run was given more steps; a run finished before puts it back
    old_summary = _set_summary_aside(run_dir) if dist.is_main and resume_from is not None else None
    had_summary = broadcast_json(old_summary is not None, dist)
    with config_errors():
        # opening the datasets reads the annotations only, and checks the window against every segment
        # the windows hold what the model and its losses read: window, chunk, cameras, robot_obs, scene state
        spec = cfg.model.window_spec()
        train_set = build_dataset(cfg.data, spec, train=True) if "action" in cfg.sources else None
        normalizer = train_set.normalizer if train_set is not None else make_normalizer(cfg.data)
        if resume_from is not None:
            _check_resumed_data(cfg, resume_from, normalizer, dist)
        val_set = build_dataset(cfg.data, spec, train=False, normalizer=normalizer) if train_set is not None else None
        stream = build_stream(cfg, dist, tc.batch_size, train_set, pin_memory=device.type == "cuda")
    fractions = source_fractions(cfg)
    # optimizer steps per pass over the data: fractional when accumulation does not divide it (rounded down, an
    # epoch count trained whole steps short, a quarter-epoch warmup rounded to none)
    steps_per_epoch = stream.batches_per_epoch / accum
    total_steps = tc.max_steps or max(math.ceil(tc.max_epochs * steps_per_epoch), 1)
    val_indices = validation_indices(len(val_set), tc.val_samples) if val_set is not None else None
    vqa = _vqa_validation(cfg, sharded=tc.strategy == "fsdp" and dist.active, is_main=dist.is_main)

    # ---- the model: the same initial weights on every rank
    seed_all(tc.seed)
    model = VLAModel.build(cfg.model, verbose=dist.is_main)
    if train_set is not None:
        with config_errors():
            check_stored_image_sizes(train_set.source, model.backbone, cfg.model.cameras)
    if resume_from is not None:
        load_weights(model, resume_from, "this run's model")
    elif cfg.init_from is not None:
        # a training-only probe the first stage did not have starts fresh (agents.vla.config.LossConfig.state_weight)
        load_weights(model, Path(cfg.init_from), "this run's model (init_from loads weights only)", fresh=("state_probe.",))
    weight_names = list(unique_state_dict(model))
    sharded = tc.strategy == "fsdp" and dist.active
    if sharded and tc.ema_decay:
        raise ValueError("trainer.ema_decay averages whole weights in each process: not with trainer.strategy=fsdp "
                         "(its weights are sharded); set trainer.ema_decay=0 or strategy=ddp")
    if not sharded:
        model.to(device)
    if set(cfg.sources) == {"action"} and not sharded:
        # DDP needs a gradient for every trainable parameter; done in one process too, so that runs on any
        # number of ranks have the same optimizer groups (unreached parameters never change either way)
        probe = collate_windows([EpochSeeded(train_set, tc.seed)[0]])
        frozen = freeze_unreached(model, to_device(probe, device))
        if frozen and dist.is_main:
            print(f"frozen (the action loss never reaches them): {', '.join(frozen)}")
    # a VL batch never reaches the policy head (nor an action batch an untied LM head): DDP must not wait
    # for their gradients unless the action loss alone trains (and freeze_unreached left only what it reaches)
    net = D.wrap(SourceLosses(model), dist, tc.strategy, device, find_unused=set(cfg.sources) != {"action"})
    optimizer = build_optimizer(model, cfg.optim, fused=True if device.type == "cuda" and not sharded else None)
    scheduler = build_scheduler(optimizer, cfg.optim, total_steps, steps_per_epoch)
    scaler = torch.amp.GradScaler(device.type, enabled=tc.precision == "fp16")
    params = [p for g in optimizer.param_groups for p in g["params"]]
    parameters = {"trainable": sum(p.numel() for p in params), "total": sum(p.numel() for p in model.parameters())}

    # ---- resume: optimizer, schedule, scaler, data position, RNG states, the steps' CPU and wall seconds;
    # else per-rank randomness
    step, best = 0, None
    timer = StepTimer()
    if resume_from is not None:
        step, best = _restore(resume_from, optimizer, net, sharded, scheduler, scaler, stream, dist, tc.seed, timer)
    else:
        seed_all(tc.seed + dist.rank)  # dropout differs per rank; data order and augmentation are seeded apart
    # the weight average starts from the loaded weights: a checkpoint's model.safetensors is the average when the
    # run keeps one, and the raw weights saved beside it then go back into the model
    ema = WeightAverage(model, tc.ema_decay, updates=step) if tc.ema_decay else None
    if resume_from is not None:
        load_raw_weights(model, resume_from, required=ema is not None)
    averaged = ema.applied if ema is not None else nullcontext
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        record_origin(run_dir, resume_from, cfg.init_from, has_checkpoints=ckpts.latest() is not None)
        atomic_write_text(run_dir / "config.yaml",
                          yaml.safe_dump({**cfg.to_dict(), "overrides": overrides}, sort_keys=False))
        print(f"run {run_dir}: {dist.world_size} rank(s) x batch {tc.batch_size} x {accum} accumulation = "
              f"{tc.batch_size * accum * dist.world_size} per step; {steps_per_epoch:.6g} steps/epoch; "
              f"{total_steps} steps" + (f"; resuming after step {step} from {resume_from}" if resume_from else ""),
              flush=True)
        for warning in schedule_warnings(cfg.optim, total_steps, steps_per_epoch):
            print(f"warning: {warning}", flush=True)
    budget = _CPUBudget(tc.max_cpu_s, timer, dist)
    if (step >= total_steps or budget.spent()) and had_summary:  # finished before: nothing to do
        if dist.is_main:
            os.replace(run_dir / SUMMARY_ASIDE, run_dir / SUMMARY)
        return json.loads(old_summary) if dist.is_main else {}
    logger = MetricsLogger(run_dir, dist.is_main, step)
    save = _Saver(cfg, ckpts, model, net, normalizer, optimizer, scheduler, scaler, stream, dist, sharded,
                  weight_names, total_steps, budget, ema, logger)
    autocast = _autocast(tc.precision, device)
    bar = tqdm(total=total_steps, initial=step, desc=cfg.run_name, unit="step", dynamic_ncols=True,
               disable=not (tc.progress and dist.is_main))
    sources = sorted(cfg.sources)
    val_metrics: dict[str, float] = {}
    rollout_metrics: dict[str, float] = {}
    stopped_by = "max_cpu_s" if budget.spent() else None

    # ---- the loop
    while step < total_steps and stopped_by is None:
        timer.start()
        group = [next(stream) for _ in range(accum)]
        timer.data_ready()
        counts = [LOSSES[source].count(batch) for source, batch in group]  # items each micro-batch's loss averages
        totals = _global_counts(group, counts, sources, dist)  # ... and per source in the whole global batch
        scales = loss_scales(group, counts, totals, fractions, dist.world_size)
        sums = torch.zeros(len(sources) + len(ACTION_PARTS), dtype=torch.float64, device=device)  # for logging
        net.train()
        for i, ((source, batch), n) in enumerate(zip(group, counts)):
            batch = to_device(batch, device)
            with D.no_grad_sync(net, skip=i < accum - 1):
                with autocast:
                    out = net(source, batch)
                scaler.scale(out["loss"] * (cfg.sources[source].weight * scales[i])).backward()
            _add_parts(sums, out, sources.index(source), len(sources) if source == "action" else None, n)
        scaler.unscale_(optimizer)
        grad_norm = _clip(params, tc.max_grad_norm)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.update()
        lr = scheduler.get_last_lr()[0]
        scheduler.step()
        step += 1
        timer.stop(sum(_batch_len(b) for _, b in group) * dist.world_size)
        bar.update(1)

        stopped_by = "max_cpu_s" if budget.spent() else "max_steps" if step == total_steps else None
        last = stopped_by is not None
        if step % tc.log_every == 0 or last:
            record = _train_record(D.all_reduce_sum(sums, dist), totals, cfg, sources, lr, grad_norm, scaler,
                                   stream.epoch)
            record.update(timer.report())
            logger.log(step, record)
            bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{lr:.2e}", refresh=False)
        score = None
        val_due = bool(tc.val_every and step % tc.val_every == 0) or last
        if val_set is not None and val_due:
            with averaged():
                val_metrics = validate(D.for_evaluation(net), val_set, val_indices, tc.batch_size, tc.num_workers,
                                       dist, device, autocast, pad_batches=sharded)
            logger.log(step, val_metrics)
            score = val_metrics.get("val/loss") if tc.best_metric == "val_loss" else None
        if vqa is not None and val_due:
            with autocast, averaged():  # rank 0 answers; the others wait at the broadcast
                vqa_metrics = broadcast_json(vqa(model) if dist.is_main else None, dist)
            logger.log(step, vqa_metrics)
            val_metrics.update(vqa_metrics)
            score = vqa_metrics["val/vqa_accuracy"] if tc.best_metric == "vqa_accuracy" else score
        rollout_due = cfg.rollout.enabled and (step % cfg.rollout.every == 0 or last)
        saved = step % tc.ckpt_every == 0 or last
        folder = save(step, best) if saved else None  # the folder on rank 0, None on the others
        if rollout_due:
            with averaged():
                rollout_metrics = broadcast_json(
                    _rollout(cfg, model, normalizer, run_dir, step, folder if sharded else None) if dist.is_main
                    else None, dist)
            logger.log(step, rollout_metrics)
            score = rollout_metrics["rollout/score"] if tc.best_metric == "rollout_success" else score
        if score is not None and _improves(score, best, tc.best_metric):  # the same decision on every rank
            best = {"metric": tc.best_metric, "value": score, "step": step}
            if tc.best_metric == "rollout_success":  # the sweep table compares runs' best checkpoints by it
                best.update(ci_low=rollout_metrics.get("rollout/score_ci_low"),
                            ci_high=rollout_metrics.get("rollout/score_ci_high"))
            if not saved:
                folder = save(step, best)
            save.mark_best(folder, best)
    bar.close()
    logger.close()

    summary = {
        "run_name": cfg.run_name, "output_dir": str(run_dir), "overrides": overrides, "steps": step,
        "epochs": round(stream.epoch, 4), "val_loss": val_metrics.get("val/loss"), "val": val_metrics,
        "rollout": rollout_metrics, "best": best, "samples_per_s": timer.mean_rate(),
        "stopped_by": stopped_by or "max_steps", "train_cpu_s": round(budget.used(), 3), "train_wall_s": round(timer.wall_s, 3),
        "parameters": parameters,
        "last_checkpoint": str(ckpts.root / "last"), "best_checkpoint": str(ckpts.root / "best") if best else None,
    }
    if dist.is_main:
        atomic_write_text(run_dir / SUMMARY, json.dumps(summary, indent=2) + "\n")
        (run_dir / SUMMARY_ASIDE).unlink(missing_ok=True)
    return summary if dist.is_main else {}


# ----------------------------------------------------------------------------------------- helpers
def _set_summary_aside(run_dir: Path) -> str | None:
    """Move summary.json aside (to SUMMARY_ASIDE, where a run stopped before it ended left it); its text, or None."""
    path, aside = run_dir / SUMMARY, run_dir / SUMMARY_ASIDE
    if path.is_file():
        os.replace(path, aside)
    return aside.read_text() if aside.is_file() else None


def _last_checkpoint_id(run_dir: Path) -> str | None:
    """What `checkpoints/last` holds, by its trainer state (step, CPU seconds, data position...): a step saved
    again is another checkpoint, a `last` copied as a folder and made a link again (RunCheckpoints) the same."""
    try:
        return (run_dir / "checkpoints" / LAST / STATE_JSON).read_text()
    except OSError:
        return None


def _put_summary_back(run_dir: Path, last_before: str | None) -> None:
    """A resumed run that stopped before it saved a checkpoint (a refused setting, an error, Ctrl-C) is still the
    finished run its old summary describes, when its last checkpoint is the summary's end: the summary comes back
    rather than wait for a good relaunch. (A run given more steps and stopped after a new checkpoint is unfinished:
    a later refused launch leaves it so.)"""
    aside = run_dir / SUMMARY_ASIDE
    if not aside.is_file() or (run_dir / SUMMARY).exists() or last_before is None:
        return
    if _last_checkpoint_id(run_dir) != last_before:
        return
    try:
        ended_at = json.loads(aside.read_text())["steps"] == json.loads(last_before)["step"]
    except (ValueError, KeyError, TypeError):
        return
    if ended_at:
        os.replace(aside, run_dir / SUMMARY)


def _resume_point(cfg: TrainConfig, ckpts: RunCheckpoints, dist: DistInfo) -> Path | None:
    """The checkpoint to resume from (rank 0 decides; the folder must be visible to every rank). A checkpoint of
    another run (`resume=PATH`: that run carried on in this folder) is where this run starts; once this run has
    checkpoints of its own the same command carries on from its last one, like `auto`."""
    found = ckpts.latest() if dist.is_main else None  # latest() may repair the folder: one rank only
    latest = broadcast_json(str(found) if found else None, dist)
    if cfg.resume not in ("auto", "never"):
        named = Path(cfg.resume)
        if latest is None or named.resolve().parent == ckpts.root.resolve():
            return named  # this run's start, or one of its own checkpoints chosen by hand
        if dist.is_main:
            print(f"resume={named} started this run; it has checkpoints of its own since: carrying on from {latest}")
        return Path(latest)
    if cfg.resume == "never" and latest is not None:
        raise ValueError(f"{cfg.output_dir} already has checkpoints (last: {latest}); resume=auto continues that run, "
                         "or choose another run_name / output_dir")
    return Path(latest) if latest else None


def _restore(folder: Path, optimizer: torch.optim.Optimizer, net: nn.Module, sharded: bool, scheduler: Any,
             scaler: torch.amp.GradScaler, stream: Any, dist: DistInfo, seed: int, timer: StepTimer) -> tuple[int, dict | None]:
    meta, named = load_trainer_state(folder)
    # the CPU seconds are all ranks' sum: rank 0 carries them on (checkpoints before these keys: 0)
    timer.cpu_s = float(meta.get("cpu_s", 0.0)) if dist.is_main else 0.0
    timer.wall_s = float(meta.get("wall_s", 0.0))
    configured = _group_settings(optimizer)
    load_optimizer_state(optimizer, net, named, sharded, folder)
    saved = _group_settings(optimizer)
    if saved != configured:  # AdamW's saved groups win: a changed value would be ignored silently
        raise ValueError(f"resume from {folder}: its optimizer has weight_decay, betas, eps {saved} "
                         f"per parameter group, this run's optim config {configured}; a resumed run keeps the "
                         "checkpoint's (docs/TRAINING.md): set optim to its values, or start a new run from its weights "
                         f"with init_from={folder}")
    restore_schedule(scheduler, meta["scheduler"])
    if meta["scaler"]:
        scaler.load_state_dict(meta["scaler"])
    stream.load_state_dict(meta["data"])
    rngs = meta["rng"]
    if len(rngs) == dist.world_size:
        set_rng_state(rngs[dist.rank])
    else:  # another number of ranks: data order is unaffected, per-rank randomness (dropout) starts afresh
        if dist.is_main:
            print(f"resuming with {dist.world_size} rank(s) instead of {len(rngs)}: RNG states re-seeded")
        seed_all(seed + dist.rank + 1_000_003 * meta["step"])
    return int(meta["step"]), meta.get("best")


def _check_resumed_data(cfg: TrainConfig, folder: Path, normalizer: ActionNormalizer, dist: DistInfo) -> None:
    """A resumed run normalises actions as its checkpoint was trained to (else the weights would carry on under
    another scaling, unnoticed); data read from another path is said (a moved dataset is fine: the data position
    checks its windows and seed)."""
    files = inspect_checkpoint(folder)
    if files.normalizer != normalizer:
        raise ValueError(f"resume from {folder}: it was trained with the action normaliser {files.normalizer.to_dict()}, "
                         f"this run's data.normalizer gives {normalizer.to_dict()}; resume with the same, or start a new "
                         f"run from its weights with init_from={folder}")
    trained_on = (files.config.get("data") or {}).get("path")
    if dist.is_main and trained_on and Path(trained_on).resolve() != Path(cfg.data.path).resolve():
        print(f"resuming {folder}, trained on data.path={trained_on}, with data.path={cfg.data.path} (the data "
              "position needs the same number of windows and seed; that it is the same data is not checked)", flush=True)


def _group_settings(optimizer: torch.optim.Optimizer) -> list[tuple[float, tuple[float, ...], float]]:
    """(weight_decay, betas, eps) of each parameter group (what an optimizer state dict carries besides lr)."""
    return [(float(g["weight_decay"]), tuple(float(b) for b in g["betas"]), float(g["eps"])) for g in optimizer.param_groups]


@dataclass
class _CPUBudget:
    """`trainer.max_cpu_s`: the CPU seconds the training steps have used on all ranks, against the budget.
    The same answer on every rank (a sum over ranks per step, only when a budget is set)."""

    limit: float | None
    timer: StepTimer
    dist: DistInfo

    def used(self) -> float:
        return float(D.all_reduce_sum(torch.tensor([self.timer.cpu_s]), self.dist)[0])

    def spent(self) -> bool:
        return self.limit is not None and self.used() >= self.limit


@dataclass
class _Saver:
    """Writes a checkpoint of the current state (collective: every rank calls it; rank 0 writes)."""

    cfg: TrainConfig
    ckpts: RunCheckpoints
    model: VLAModel
    net: nn.Module
    normalizer: ActionNormalizer
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    stream: Any
    dist: DistInfo
    sharded: bool
    weight_names: list[str]
    total_steps: int
    budget: _CPUBudget
    ema: WeightAverage | None
    logger: MetricsLogger

    def __call__(self, step: int, best: dict | None) -> Path | None:
        weights = full_weights(self.net, self.weight_names) if self.sharded else None
        optim = optimizer_state(self.optimizer, self.net, self.sharded) if (self.sharded or self.dist.is_main) else None
        rngs = D.gather_json(rng_state(), self.dist)
        cpu_s = self.budget.used()
        prints = D.rank_fingerprints(self.model, self.dist, self.sharded)
        if prints is not None and len(set(prints)) > 1:
            raise RuntimeError(f"step {step}: the ranks' weights differ (fingerprints {prints})")
        folder = None
        if self.dist.is_main:
            meta = {"step": step, "total_steps": self.total_steps, "data": self.stream.state_dict(),
                    "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(), "rng": rngs,
                    "best": best, "world_size": self.dist.world_size, "rank_fingerprints": prints,
                    "cpu_s": cpu_s, "wall_s": self.budget.timer.wall_s}
            extra = {"data": self.cfg.data.to_dict(), "train": _train_section(self.cfg), "step": step}

            def write(d: Path) -> None:
                if self.ema is None:
                    save_checkpoint(d, self.model, self.normalizer, extra, state_dict=weights)
                else:  # what agents load is the average; the raw weights resume the training
                    save_raw_weights(d, self.ema.raw_weights())
                    with self.ema.applied():
                        save_checkpoint(d, self.model, self.normalizer, extra)
                save_trainer_state(d, meta, optim)
                # the weights of the step as metrics.jsonl's trajectory has them (once the folder is pruned,
                # trainer.keep_last, its curve row is kept only for an evaluation of these: harness.train.curve),
                # written before the folder takes its name, so a resumable step always has its line (one of a
                # step killed before its rename is dropped by the resume, as the step's other lines are)
                self.logger.log(step, {CHECKPOINT_WEIGHTS: checkpoint_digest(d)})

            folder = self.ckpts.save(step, write)
        barrier(self.dist)
        return folder

    def mark_best(self, folder: Path | None, best: dict) -> None:
        if self.dist.is_main and folder is not None:
            record_best(folder, best)
            self.ckpts.link_best(folder)


def _train_section(cfg: TrainConfig) -> dict[str, Any]:
    d = cfg.to_dict()
    return {k: d[k] for k in ("stage", "sources", "optim", "trainer", "init_from")}


def _rollout(cfg: TrainConfig, model: VLAModel, normalizer: ActionNormalizer, run_dir: Path, step: int,
             checkpoint: Path | None) -> dict[str, float]:
    out = run_dir / "rollouts" / step_name(step) if cfg.rollout.output else None
    return rollout(model, normalizer, cfg.rollout, out, checkpoint)


def _vqa_validation(cfg: TrainConfig, sharded: bool, is_main: bool) -> VQAValidation | None:
    """VQA accuracy at each validation when a `vl` source trains (not under FSDP: generation on one rank
    cannot gather the shards; evaluate the checkpoints with `python -m harness.eval.vqa` instead)."""
    if "vl" not in cfg.sources:
        return None
    if sharded:
        if cfg.trainer.best_metric == "vqa_accuracy":
            raise ValueError("trainer.best_metric=vqa_accuracy is not available with trainer.strategy=fsdp")
        if is_main:
            print("fsdp: no VQA accuracy during training; run python -m harness.eval.vqa on the checkpoints")
        return None
    return VQAValidation(cfg)


def _improves(score: float, best: dict | None, metric: str) -> bool:
    if not math.isfinite(score):  # a NaN would be kept as best, and nothing compares better than a NaN
        return False
    if best is None or not math.isfinite(best["value"]):
        return True
    return score < best["value"] if metric == "val_loss" else score > best["value"]  # success rates, accuracy


def _autocast(precision: str, device: torch.device) -> Any:
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def _clip(params: list[nn.Parameter], max_norm: float) -> float:
    """The global gradient norm before clipping; clips to max_norm unless it is 0."""
    grads = [p.grad for p in params if p.grad is not None]
    norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(())
    if max_norm > 0 and grads:
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)
    if hasattr(norm, "full_tensor"):  # FSDP: a DTensor
        norm = norm.full_tensor()
    return float(norm)


def loss_scales(group: list[tuple[str, Any]], counts: list[int], totals: dict[str, float],
                fractions: dict[str, float], world_size: int) -> list[float]:
    """What each micro-batch's mean loss is multiplied by (before its source's weight): its share of its source's
    items in the global batch (DDP/FSDP average the ranks' gradients: x world size), times the source's
    micro-batches in the step over their expected number (accumulation x fraction). A source that has no
    micro-batch in some steps (accumulation 3 at a quarter) weighs more in those it has, so that over the steps
    each source's loss counts `weight` times its items' mean whatever the accumulation; where the accumulation
    holds each source's share exactly (4 at a quarter), that factor is 1."""
    accum = len(group)
    present = {source: sum(s == source for s, _ in group) for source, _ in group}
    return [n * world_size / totals[source] * present[source] / (accum * fractions[source])
            for (source, _), n in zip(group, counts)]


def _global_counts(group: list[tuple[str, Any]], counts: list[int], sources: list[str],
                   dist: DistInfo) -> dict[str, float]:
    local = torch.zeros(len(sources), dtype=torch.float64)
    for (source, _), n in zip(group, counts):
        local[sources.index(source)] += n
    total = D.all_reduce_sum(local, dist)
    return {s: float(total[i]) for i, s in enumerate(sources)}


def _add_parts(sums: torch.Tensor, out: dict[str, torch.Tensor], index: int, parts_at: int | None, n: int) -> None:
    """Add the micro-batch's loss (and action parts, at `parts_at`) times its item count; no host sync."""
    sums[index] += out["loss"].detach().double() * n
    if parts_at is not None:
        for j, key in enumerate(ACTION_PARTS):
            sums[parts_at + j] += out[key].detach().double() * n


def _train_record(sums: torch.Tensor, counts: dict[str, float], cfg: TrainConfig, sources: list[str], lr: float,
                  grad_norm: float, scaler: torch.amp.GradScaler, epoch: float) -> dict[str, Any]:
    record: dict[str, Any] = {"epoch": round(epoch, 5), "lr": lr}
    total = 0.0
    for i, s in enumerate(sources):
        value = float(sums[i]) / counts[s] if counts[s] else float("nan")
        record[f"loss/{s}"] = value
        total += cfg.sources[s].weight * value if counts[s] else 0.0
    record["loss"] = total
    if counts.get("action"):
        for j, key in enumerate(ACTION_PARTS):
            record[key] = float(sums[len(sources) + j]) / counts["action"]
    record["grad_norm"] = grad_norm
    record["clipped"] = bool(cfg.trainer.max_grad_norm and grad_norm > cfg.trainer.max_grad_norm)
    if scaler.is_enabled():
        record["grad_scale"] = float(scaler.get_scale())
    return record


def _batch_len(batch: Any) -> int:
    for key in ("instruction", "prompts"):
        if key in batch:
            return len(batch[key])
    return 0
