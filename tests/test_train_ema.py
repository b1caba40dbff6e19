"""trainer.ema_decay: checkpoints hold the average of the weights, the training itself is unchanged, and a
resumed run carries the average and the raw weights on exactly."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from harness.train.ema import WeightAverage, main
from harness.train.state import RAW_WEIGHTS
from tests.train_helpers import (assert_close_weights, cli, dataset, losses, metrics, run_cli,  # noqa: F401
                                 train_here, weights)

DECAY = 0.9
RUN = ("trainer.max_steps=10", "trainer.ckpt_every=5", "trainer.val_every=5", "trainer.keep_last=0",
       "optim.schedule=constant")


def _decay(n: int) -> float:
    """The decay of the n-th update (1-based): warmed up as (1 + n) / (10 + n), capped at DECAY."""
    return min(DECAY, (1 + n) / (10 + n))


def test_the_average_follows_the_formula_skips_frozen_parameters_and_is_swapped_in_only_inside_the_block():
    net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    net[1].weight.requires_grad_(False)
    ema = WeightAverage(net, DECAY)
    assert "1.weight" not in ema.names
    expected = net[0].weight.detach().clone()
    for n in range(1, 6):
        with torch.no_grad():
            net[0].weight.add_(float(n))
        ema.update()
        expected = _decay(n) * expected + (1 - _decay(n)) * net[0].weight.detach()
    raw = net[0].weight.detach().clone()
    with ema.applied():
        torch.testing.assert_close(net[0].weight.detach(), expected)
    assert torch.equal(net[0].weight.detach(), raw)
    assert torch.equal(ema.raw_weights()["0.weight"], raw)
    with pytest.raises(ValueError, match=r"trainer.ema_decay must be in \(0, 1\)"):
        WeightAverage(net, 1.0)


@pytest.fixture(scope="module")
def plain(dataset, tmp_path_factory):
    """The run without an average, a checkpoint every step (each step's weights)."""
    out = tmp_path_factory.mktemp("plain")
    train_here(dataset, out, *RUN, "trainer.ckpt_every=1")
    return out


@pytest.fixture(scope="module")
def averaged(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("averaged")
    train_here(dataset, out, *RUN, f"trainer.ema_decay={DECAY}")
    return out


def _step(run, step: int):
    return run / "checkpoints" / f"step_{step:07d}"


def test_the_average_changes_what_is_saved_and_validated_but_not_what_is_trained(plain, averaged):
    assert losses(averaged) == losses(plain)
    raw = load_file(str(averaged / "checkpoints" / "last" / RAW_WEIGHTS))
    straight = weights(plain / "checkpoints" / "last")
    assert raw and all(torch.equal(raw[k], straight[k]) for k in raw)
    # checkpoint 10's average is checkpoint 5's average carried on with the plain run's weights of steps 6-10
    average = weights(_step(averaged, 5))
    for n in range(6, 11):
        w = weights(_step(plain, n))
        average = {k: _decay(n) * average[k] + (1 - _decay(n)) * w[k] if k in raw else average[k] for k in average}
    saved = weights(averaged / "checkpoints" / "last")
    for name in saved:
        torch.testing.assert_close(saved[name], average[name], rtol=1e-5, atol=1e-6, msg=name)
    assert any(not torch.equal(saved[k], raw[k]) for k in raw)
    val = [r["val/loss"] for r in metrics(averaged) if "val/loss" in r]
    assert val != [r["val/loss"] for r in metrics(plain) if "val/loss" in r]


def test_a_resumed_run_carries_the_average_and_the_raw_weights_on_exactly(dataset, averaged, tmp_path):
    out = tmp_path / "resumed"
    train_here(dataset, out, *RUN, f"trainer.ema_decay={DECAY}", "trainer.max_steps=5")
    train_here(dataset, out, *RUN, f"trainer.ema_decay={DECAY}")
    for name in ("model.safetensors", RAW_WEIGHTS):
        a = load_file(str(out / "checkpoints" / "last" / name))
        b = load_file(str(averaged / "checkpoints" / "last" / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


def test_switching_the_average_off_continues_from_the_raw_weights_and_on_is_refused(dataset, plain, tmp_path):
    off = tmp_path / "off"
    train_here(dataset, off, *RUN, f"trainer.ema_decay={DECAY}", "trainer.max_steps=5")
    train_here(dataset, off, *RUN)
    a, b = weights(off / "checkpoints" / "last"), weights(plain / "checkpoints" / "last")
    assert all(torch.equal(a[k], b[k]) for k in b)

    on = tmp_path / "on"
    train_here(dataset, on, *RUN, "trainer.max_steps=5")
    with pytest.raises(ValueError, match="no raw_weights.safetensors.*cannot be switched on when resuming"):
        train_here(dataset, on, *RUN, f"trainer.ema_decay={DECAY}")



def test_the_raw_weights_export_as_a_checkpoint_that_loads_and_a_plain_checkpoint_is_refused(averaged, plain, tmp_path,
                                                                                             capsys):
    from agents.vla.checkpoint import load_checkpoint

    out = tmp_path / "raw"
    leftover = averaged / "checkpoints" / "last" / ".trainer_state.json.tmp-4242"  # record_best killed mid-write
    leftover.write_text("{")
    try:
        main([str(averaged / "checkpoints" / "last"), str(out)])
    finally:
        leftover.unlink()  # the fixture's checkpoint is shared
    raw = load_file(str(averaged / "checkpoints" / "last" / RAW_WEIGHTS))
    exported = weights(out)
    assert all(torch.equal(exported[k], raw[k]) for k in raw)
    assert not (out / RAW_WEIGHTS).exists() and not (out / "trainer_state.json").exists()
    assert not (out / leftover.name).exists()
    model = load_checkpoint(out).model
    assert all(torch.equal(p.detach(), raw[n]) for n, p in model.named_parameters() if n in raw)
    with pytest.raises(SystemExit) as stop:
        main([str(plain / "checkpoints" / "last"), str(tmp_path / "plain_raw")])
    assert stop.value.code == 2 and "no raw_weights.safetensors" in capsys.readouterr().err
    assert not (tmp_path / "plain_raw").exists()


def test_two_ranks_keep_the_same_average_as_one_process_and_fsdp_is_refused(dataset, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    args = ("trainer.max_steps=4", "trainer.ckpt_every=2", "trainer.val_every=2", f"trainer.ema_decay={DECAY}")
    run_cli(cli(dataset, one, *args, "trainer.batch_size=4"))
    run_cli(cli(dataset, two, *args, "trainer.batch_size=2"), torchrun=2)
    assert_close_weights(two, one, atol=1e-5)
    a = load_file(str(two / "checkpoints" / "last" / RAW_WEIGHTS))
    b = load_file(str(one / "checkpoints" / "last" / RAW_WEIGHTS))
    for name in b:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-5, msg=name)

    proc = run_cli(cli(dataset, tmp_path / "fsdp", *args, "trainer.batch_size=2", "trainer.strategy=fsdp"), torchrun=2,
                   succeeds=False)
    assert "trainer.ema_decay averages whole weights in each process: not with trainer.strategy=fsdp" in proc.stderr
