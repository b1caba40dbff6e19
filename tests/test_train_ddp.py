"""torchrun with 2 CPU processes (gloo): the ranks stay identical, and equal a one-process run with the same
global batch."""

from __future__ import annotations

import json

import pytest

from tests.train_helpers import (  # noqa: F401  (fixtures)
    DIST_RUN, assert_close_weights, cli, dataset, losses, metrics, run_cli, single)


def _state(out, step: int) -> dict:
    return json.loads((out / "checkpoints" / f"step_{step:07d}" / "trainer_state.json").read_text())


def test_two_ranks_stay_identical_and_equal_one_process_with_the_same_global_batch(dataset, tmp_path, single):
    out = tmp_path / "ddp"
    proc = run_cli(cli(dataset, out, *DIST_RUN, "trainer.batch_size=2"), torchrun=2)
    assert "2 rank(s) x batch 2 x 1 accumulation = 4 per step" in proc.stdout
    for step in (2, 4):  # every rank's own digest of its weights, gathered at each checkpoint
        prints = _state(out, step)["rank_fingerprints"]
        assert len(prints) == 2 and prints[0] == prints[1]
    assert _state(single, 4)["rank_fingerprints"] is None  # one process: nothing to compare
    # the same samples and the same gradient (count-weighted over ranks): the same run, up to float rounding
    assert losses(out) == pytest.approx(losses(single), rel=1e-5)
    val = [r["val/loss"] for r in metrics(out) if "val/loss" in r]
    assert val == pytest.approx([r["val/loss"] for r in metrics(single) if "val/loss" in r], rel=1e-5)
    assert_close_weights(out, single, atol=1e-5)
    # rank 0 alone wrote the run folder
    assert sorted(p.name for p in out.iterdir()) == [".hydra", "checkpoints", "config.yaml", "metrics.jsonl",
                                                     "summary.json", "tb"]


@pytest.mark.parametrize("stage", ["vl_stage1", "co_training"])
def test_two_ranks_train_vision_language_batches(dataset, tmp_path, stage):
    """Stage 1 (the policy head gets no gradient) and co-training (VL and action micro-batches reach
    different parameters) under DDP: the run completes and the ranks' weights stay identical."""
    from harness.data.vl.generate import generate

    vl = tmp_path / "vl"
    generate(vl, num_states=4, seed=5, scenes="D", val_fraction=0.25)
    mode = (["+experiment=vl_stage1"] if stage == "vl_stage1" else
            ["sources=action_vl", "trainer.grad_accum=2", "sources.vl.ratio=0.5", "sources.action.ratio=0.5"])
    out = tmp_path / stage
    run_cli(cli(dataset, out, *mode, f"sources.vl.options.path={vl}", "trainer.batch_size=2", "trainer.max_steps=2",
                "trainer.ckpt_every=2", "trainer.val_every=2", "trainer.val_samples=4"), torchrun=2)
    prints = _state(out, 2)["rank_fingerprints"]
    assert len(prints) == 2 and prints[0] == prints[1]
    assert any("val/vqa_accuracy" in r for r in metrics(out))


def test_a_finished_rank_exits_at_once_with_its_output_flushed():
    """`exit_without_teardown` (how a finished torchrun rank of harness.train ends): what was printed but
    not yet flushed, to a pipe and through logging, reaches the reader, and the exit status is the one given;
    atexit handlers (the teardown it skips) do not run."""
    import subprocess
    import sys

    from tests.train_helpers import ENV, ROOT

    script = ("import atexit, logging, sys\n"
              "from harness.lifetime import exit_without_teardown\n"
              "logging.basicConfig(stream=sys.stderr, level=logging.INFO)\n"
              "atexit.register(lambda: print('teardown ran'))\n"
              "print('summary written', end='')\n"
              "logging.getLogger('train').info('done')\n"
              "exit_without_teardown(3)\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 3
    assert proc.stdout == "summary written"  # flushed, and no atexit handler ran after it
    assert "INFO:train:done" in proc.stderr


def test_a_run_folder_another_training_writes_is_refused_on_every_rank(dataset, tmp_path):
    """Two trainings of one folder interleaved their checkpoints and metrics; rank 0 holds the folder's lock and
    every rank stops on the refusal (none waits for the others in a collective)."""
    from harness.folder_lock import FolderLock
    from harness.train.trainer import RUN_BUSY

    out = tmp_path / "held"
    out.mkdir()
    with FolderLock(out, RUN_BUSY):
        proc = run_cli(cli(dataset, out, *DIST_RUN, "trainer.batch_size=2"), torchrun=2, timeout=120, succeeds=False)
    assert proc.stderr.count(f"invalid configuration: output_dir: {out} is being trained by another harness.train") == 2
    assert not (out / "checkpoints").exists() and not (out / "metrics.jsonl").exists()
