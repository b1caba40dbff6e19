"""End to end on CPU: train a tiny VLA for 20 steps on a CALVIN-layout dataset (with the rollout callback on),
load the checkpoint into an agent, evaluate 2 CALVIN chains, and check the report.

The data is tests/calvin_layout's hand-made dataset; once the recorder exists, the data source becomes 2 short
chains recorded by the scripted expert."""

from __future__ import annotations

import json

import numpy as np
import pytest

from agents import load_agent
from harness.eval import evaluate_chains
from tests.train_helpers import dataset, metrics, train_here  # noqa: F401  (fixture)


def test_train_save_load_evaluate(dataset, tmp_path):
    run = tmp_path / "run"
    summary = train_here(dataset, run, "trainer.max_steps=20", "trainer.val_every=10", "trainer.ckpt_every=10",
                         "rollout=single_task", "rollout.tasks=[open_drawer]", "rollout.episodes_per_task=1",
                         "rollout.ep_len=3", "rollout.every=10", "rollout.output=true")
    assert summary["steps"] == 20 and summary["val_loss"] is not None

    lines = metrics(run)
    train_lines = [r for r in lines if "loss" in r]
    assert [r["step"] for r in train_lines] == list(range(1, 21))
    assert all(r["grad_norm"] > 0 and r["samples_per_s"] > 0 for r in train_lines)
    assert [r["step"] for r in lines if "val/loss" in r] == [10, 20]
    rollouts = [r for r in lines if "rollout/score" in r]
    assert [r["step"] for r in rollouts] == [10, 20]
    assert all(r["rollout/open_drawer"] in (0.0, 1.0) for r in rollouts)
    assert all(r["rollout/open_drawer_ci_low"] <= r["rollout/open_drawer"] <= r["rollout/open_drawer_ci_high"]
               and r["rollout/score_ci_high"] - r["rollout/score_ci_low"] > 0.5 for r in rollouts)  # 1 episode: wide
    assert (run / "rollouts" / "step_0000020" / "results.json").is_file()
    assert "| task | success | episodes | rate | 95 % CI |" in (run / "rollouts" / "step_0000020" / "report.md").read_text()
    assert list((run / "tb").glob("events.out.tfevents.*"))
    assert (run / "config.yaml").is_file() and json.loads((run / "summary.json").read_text())["steps"] == 20

    ckpt = run / "checkpoints" / "last"
    assert ckpt.resolve().name == "step_0000020" and (run / "checkpoints" / "best").is_symlink()
    agent = load_agent(ckpt)
    out = tmp_path / "eval"
    results = evaluate_chains(agent, num_chains=2, ep_len=4, workers=0, output_dir=out)
    assert results["num_chains"] == 2 and set(results["chain_sr"]) == {"1", "2", "3", "4", "5"}
    assert results["agent"]["checkpoint"] == str(ckpt)
    assert (out / "results.json").is_file() and "Average successful sequence length" in (out / "report.md").read_text()
    assert json.loads((out / "results.json").read_text())["avg_seq_len"] == pytest.approx(results["avg_seq_len"])


@pytest.mark.parametrize("preset", ["scratch", "tiny_mllama"])
def test_the_baseline_and_the_cross_attention_family_train_in_the_same_loop(dataset, tmp_path, preset):
    """The non-VLM baseline and Mllama go through the training loop (bf16 autocast, as CPU runs train), its
    checkpoint and the agent as they are."""
    run = tmp_path / "run"
    summary = train_here(dataset, run, f"model={preset}", "trainer.max_steps=3", "trainer.val_every=3",
                         "trainer.ckpt_every=3", "trainer.precision=bf16")
    assert summary["steps"] == 3 and summary["val_loss"] is not None
    assert all(r["grad_norm"] > 0 for r in metrics(run) if "loss" in r)
    agent = load_agent(run / "checkpoints" / "last")
    assert agent.model.cfg.backbone.family == {"scratch": "scratch", "tiny_mllama": "mllama"}[preset]
    obs = {"rgb_obs": {"rgb_static": np.zeros((200, 200, 3), np.uint8)}, "robot_obs": np.zeros(15)}
    assert agent.step(obs, "open the drawer").shape == (7,)
