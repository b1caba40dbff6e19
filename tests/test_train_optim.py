"""AdamW groups, the schedule, and that clipping and accumulation act as configured in the real loop."""

from __future__ import annotations

import math

import pytest
import torch

from harness.train.config import OptimConfig
from harness.train.optim import build_optimizer, build_scheduler, lr_factor, parameter_groups, warmup_steps
from tests.train_helpers import AVX2_ONLY, cli, dataset, losses, metrics, run_cli, train_here, weights  # noqa: F401  (fixture)
from tests.vla_helpers import build_model, tiny_dir  # noqa: F401  (fixture)


def test_no_weight_decay_on_norms_biases_and_embeddings(tiny_dir):
    model = build_model(tiny_dir, "tiny_llava", head="gpt", proprio=True)
    decay, keep = parameter_groups(model)
    params = dict(model.named_parameters())
    assert not set(decay) & set(keep)
    assert set(decay) | set(keep) == {n for n, p in params.items() if p.requires_grad}
    assert "vlm.model.language_model.embed_tokens.added" in keep  # the [LRN]/[PROPRIO] table
    assert "vlm.model.language_model.embed_tokens.base.weight" in keep  # word embeddings (tied LM head too)
    assert "head.pos.weight" in keep  # the GPT head's learned positions
    assert any("vision_tower" in n and "position_embedding" in n for n in keep)
    assert all(params[n].ndim >= 2 for n in decay)  # biases and norm scales are all in `keep`
    assert any("norm" in n for n in keep) and any(n.endswith(".bias") for n in keep)
    assert any("q_proj.weight" in n for n in decay) and any(n.startswith("head.") for n in decay)

    opt = build_optimizer(model, OptimConfig(lr=1e-3, weight_decay=0.1))
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    assert [g["names"] for g in opt.param_groups] == [decay, keep]


def test_schedule_warmup_as_steps_or_fraction_of_an_epoch_then_constant_or_cosine():
    # warmup: linear from lr/warmup to lr
    assert [lr_factor(s, 4, 100, "constant", 0.0) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    # cosine: from lr just after the warmup to min_ratio * lr at the last step
    cos = [lr_factor(s, 2, 12, "cosine", 0.1) for s in range(12)]
    assert cos[2] == pytest.approx(1.0) and cos[11] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(cos[2:], cos[3:]))
    assert cos[2 + 9 // 2] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 4 / 9)))

    # wsd: constant after the warmup, then the cosine over the last decay_steps (here 4 of 12) to min_ratio
    wsd = [lr_factor(s, 2, 12, "wsd", 0.1, decay_steps=4) for s in range(12)]
    assert wsd[:8] == [0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0] and wsd[8] == pytest.approx(1.0)
    assert wsd[11] == pytest.approx(0.1) and wsd[9] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 3)))
    # decaying over more steps than the run has after its warmup is the cosine schedule
    assert [lr_factor(s, 2, 12, "wsd", 0.1, decay_steps=50) for s in range(12)] == cos
    for bad in ({"schedule": "wsd"}, {"schedule": "cosine", "decay_steps": 10}, {"schedule": "wsd", "decay_steps": -1},
                {"schedule": "wsd", "decay_steps": 1}):  # one step: the decay's first, at the full lr
        with pytest.raises(ValueError, match="optim.decay_steps is the wsd schedule's"):
            OptimConfig(**bad)

    # warmup_epochs: a quarter epoch of 40 optimizer steps = 10 steps; the scheduler applies it to every group
    model = torch.nn.Linear(3, 3)
    cfg = OptimConfig(lr=1.0, warmup_epochs=0.25, schedule="cosine", min_lr_ratio=0.0)
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, total_steps=50, steps_per_epoch=40)
    lrs = []
    for _ in range(50):
        lrs.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    assert all(len(set(x)) == 1 for x in lrs)
    assert lrs[0][0] == pytest.approx(0.1) and lrs[9][0] == pytest.approx(1.0) and lrs[49][0] == pytest.approx(0.0)


def _record_step_grads(monkeypatch) -> list[dict[str, torch.Tensor]]:
    """Every AdamW step's gradients, as the optimizer sees them (after the trainer's clipping)."""
    seen: list[dict[str, torch.Tensor]] = []
    original = torch.optim.AdamW.step

    def step(self, *args, **kwargs):
        seen.append({n: p.grad.clone() for g in self.param_groups for n, p in zip(g["names"], g["params"])
                     if p.grad is not None})
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    return seen


def _norm(grads: dict[str, torch.Tensor]) -> float:
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads.values()])))


def test_clipping_caps_the_norm_the_optimizer_sees_and_logs_the_norm_before(dataset, tmp_path, monkeypatch):
    seen = _record_step_grads(monkeypatch)
    train_here(dataset, tmp_path / "clip", "trainer.max_steps=3", "trainer.max_grad_norm=0.01")
    logged = [r for r in metrics(tmp_path / "clip") if "grad_norm" in r]
    assert len(seen) == len(logged) == 3
    for grads, record in zip(seen, logged):
        assert record["grad_norm"] > 0.01 and record["clipped"]  # the tiny model's norms are ~0.1-1
        assert _norm(grads) <= 0.01 * (1 + 1e-5)
        assert _norm(grads) == pytest.approx(0.01, rel=1e-4)

    seen.clear()
    train_here(dataset, tmp_path / "noclip", "trainer.max_steps=3", "trainer.max_grad_norm=0")  # 0: no clipping
    unclipped = [r["grad_norm"] for r in metrics(tmp_path / "noclip") if "grad_norm" in r]
    assert [_norm(g) for g in seen] == pytest.approx(unclipped, rel=1e-5)
    assert not any(r["clipped"] for r in metrics(tmp_path / "noclip") if "clipped" in r)
    assert unclipped[0] == pytest.approx(logged[0]["grad_norm"], rel=1e-6)  # the same first step, before clipping


def test_four_micro_batches_equal_one_batch_four_times_larger(dataset, tmp_path, monkeypatch):
    seen = _record_step_grads(monkeypatch)
    common = ("trainer.max_steps=3", "trainer.max_grad_norm=0", "trainer.val_every=0")
    train_here(dataset, tmp_path / "big", "trainer.batch_size=8", "trainer.grad_accum=1", *common)
    big = list(seen)
    seen.clear()
    train_here(dataset, tmp_path / "acc", "trainer.batch_size=2", "trainer.grad_accum=4", *common)
    acc = list(seen)
    assert len(big) == len(acc) == 3
    # the windows include segment ends: micro-batches hold different numbers of unmasked action slots,
    # so a plain mean of micro-batch means would differ; the count weighting makes them equal
    for g_big, g_acc in zip(big, acc):
        assert g_big.keys() == g_acc.keys()
        for name in g_big:
            torch.testing.assert_close(g_acc[name], g_big[name], rtol=1e-4, atol=1e-7)
    assert losses(tmp_path / "acc") == pytest.approx(losses(tmp_path / "big"), rel=1e-5)
    w_big, w_acc = weights(tmp_path / "big" / "checkpoints" / "last"), weights(tmp_path / "acc" / "checkpoints" / "last")
    for name in w_big:
        torch.testing.assert_close(w_acc[name], w_big[name], rtol=1e-4, atol=1e-5)


def test_bf16_autocast_on_cpu_and_gradient_checkpointing_are_passed_through(dataset, tmp_path, monkeypatch):
    from agents.vla.model import VLAModel

    built: list[VLAModel] = []
    build = VLAModel.build.__func__

    def keep(cls, cfg, verbose=True):
        built.append(build(cls, cfg, verbose))
        return built[-1]

    monkeypatch.setattr(VLAModel, "build", classmethod(keep))
    common = ("trainer.max_steps=3", "trainer.val_every=0")
    train_here(dataset, tmp_path / "fp32", *common)
    train_here(dataset, tmp_path / "bf16", *common, "trainer.precision=bf16")
    train_here(dataset, tmp_path / "ckpt", *common, "model.finetune.gradient_checkpointing=true")
    fp32, bf16, ckpt = (losses(tmp_path / n) for n in ("fp32", "bf16", "ckpt"))
    assert bf16 != fp32 and bf16 == pytest.approx(fp32, rel=2e-2)  # autocast ran, in bfloat16
    assert not built[0].vlm.is_activation_checkpointing and built[2].vlm.is_activation_checkpointing
    assert ckpt == pytest.approx(fp32, rel=1e-6)  # recomputing activations changes nothing


def test_bf16_training_on_a_cpu_without_a_bf16_lstm(dataset, tmp_path):
    """On an AVX2-only CPU (emulated: oneDNN and ATen limited to AVX2) oneDNN has no bf16 LSTM: the LSTM head
    runs in fp32 under bf16 autocast, and the log says so once."""
    out = tmp_path / "avx2"
    proc = run_cli(cli(dataset, out, "trainer.max_steps=2", "trainer.val_every=0", "trainer.precision=bf16"), env=AVX2_ONLY)
    assert (proc.stdout + proc.stderr).count("this CPU has no bfloat16 LSTM") == 1, proc.stderr[-3000:]
    assert len(losses(out)) == 2 and all(math.isfinite(v) for v in losses(out).values())


def test_a_schedule_the_run_cannot_follow_is_said():
    """A config made for a long run trained briefly (trainer=cpu's 200 steps with a quarter-epoch warmup of a CALVIN
    split): the lr never reached optim.lr, without a word."""
    from harness.train.optim import schedule_warnings

    assert "never reaches optim.lr=0.001" in schedule_warnings(OptimConfig(lr=1e-3, warmup_epochs=0.25), 200, 4000.0)[0]
    wsd = OptimConfig(schedule="wsd", decay_steps=300, warmup_steps=10, warmup_epochs=0)
    assert "decays from the warmup's end" in schedule_warnings(wsd, 200, 4000.0)[0]
    assert schedule_warnings(wsd, 400, 4000.0) == [] and schedule_warnings(OptimConfig(warmup_steps=10, warmup_epochs=0), 200, 1.0) == []
    # an epoch of 10 micro-batches at accumulation 4 is 2.5 steps: a quarter of one warms up over 1 step (it was
    # a quarter of 2 whole steps, rounded to none)
    assert warmup_steps(OptimConfig(warmup_epochs=0.25), 10 / 4) == 1


def test_max_epochs_counts_whole_passes_when_the_accumulation_does_not_divide_an_epoch(dataset, tmp_path):
    """10 micro-batches an epoch at accumulation 4: steps per epoch were rounded down to 2, so max_epochs=2 trained
    4 steps, 1.6 epochs; now 5 steps, the 2 epochs asked for."""
    summary = train_here(dataset, tmp_path / "run", "trainer.max_steps=null", "trainer.max_epochs=2",
                         "trainer.batch_size=8", "trainer.grad_accum=4", "trainer.val_every=0", "trainer.ckpt_every=100")
    steps, epochs = summary["steps"], summary["epochs"]
    assert epochs >= 2 and (steps - 1) / steps * epochs < 2  # one step fewer would fall short of 2 epochs


def test_a_nan_score_never_becomes_the_best_checkpoint():
    """A first validation that gave NaN (an fp16 blow-up) was kept as best, and nothing compares better than NaN:
    `best` stayed at that step for the rest of the run."""
    from harness.train.trainer import _improves

    nan = float("nan")
    assert not _improves(nan, None, "val_loss") and not _improves(nan, {"value": 0.5}, "rollout_success")
    assert _improves(0.5, {"value": nan}, "val_loss") and _improves(0.4, {"value": 0.5}, "val_loss")
    assert not _improves(0.6, {"value": 0.5}, "val_loss") and _improves(0.6, {"value": 0.5}, "vqa_accuracy")


def test_a_sweep_ranked_by_rollouts_compares_the_runs_best_checkpoints():
    """checkpoints/best keeps a run's best rollout: run 0 reached 0.9 and ended at 0.5, run 1 stayed at 0.6; the
    best run is 0 (its last rollout alone named 1), separated from run 1 by the best checkpoints' intervals."""
    from harness.train.sweep import best_run, best_rollout, not_separated

    def row(run, best, low, high, last):
        return {"run": run, "best_metric": "rollout_success", "best_value": best, "best_ci_low": low,
                "best_ci_high": high, "val_loss": 0.1, "rollout_score": last, "rollout_score_ci_low": last - 0.3,
                "rollout_score_ci_high": last + 0.3}

    rows = [row("0", 0.9, 0.8, 0.95, 0.5), row("1", 0.6, 0.5, 0.7, 0.6)]
    best = best_run(rows)
    assert best["run"] == "0" and best_rollout(best) == (0.9, 0.8, 0.95) and not_separated(rows, best) == []
    older = dict(rows[1], best_ci_low=None, best_ci_high=None)  # a summary from before the best kept its interval
    assert best_rollout(older) == (0.6, None, None)
    assert best_rollout(dict(older, best_value=None)) == pytest.approx((0.6, 0.3, 0.9))  # no best: the last rollout


def test_a_sweep_of_vision_language_runs_names_its_best_by_vqa_accuracy():
    """Stage-1 runs (sources=vl) have no validation loss: the sweep table said "Best run: none"."""
    from harness.train.sweep import best_run

    rows = [{"run": str(k), "best_metric": "vqa_accuracy", "best_value": v, "val_loss": None, "rollout_score": None}
            for k, v in enumerate((0.41, 0.62, float("nan"), 0.55))]
    assert best_run(rows)["run"] == "1"
