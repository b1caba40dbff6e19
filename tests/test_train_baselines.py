"""harness.train.baselines: the trivial predictors' arm loss on a recorded dataset."""

from __future__ import annotations

import numpy as np
import pytest

from agents.vla.heads import SCENE_STATE, scene_state_loss
from harness.data.sync import open_frames
from harness.train.baselines import Frames, baselines, main, scene_states, smooth_l1, state_baselines


def test_baselines_fit_on_training_and_order_as_their_information(recording, capsys):
    table = baselines(str(recording))
    train = Frames.read(str(recording), "training", 1.0)
    # the mean row is the loss of the training split's mean action, computed here directly
    assert table["mean"]["training"] == pytest.approx(smooth_l1(train.arm - train.arm.mean(0)))
    assert set(train.task) == {"rotate_blue_block_left", "open_drawer", "push_pink_block_right", "lift_blue_block_slider"}
    # on the data they were fitted to, a predictor that knows more does no worse (least squares, nested)
    t = {name: row["training"] for name, row in table.items()}
    assert t["task x time"] <= t["task mean"] <= t["mean"]
    assert t["task x robot_obs linear"] < t["task mean"] and t["robot_obs linear"] < t["mean"]
    assert t["last TCP motion linear"] < t["mean"]  # the expert's actions are smooth: the last motion predicts the next
    assert all(np.isfinite(row["validation"]) for row in table.values())  # stack_block: a task training lacks
    main([str(recording)])
    out = capsys.readouterr().out
    assert "| task x robot_obs linear |" in out and "| mean state |" in out and out.count("\n") == 8 + 5


def test_the_state_floor_is_the_scene_state_loss_of_the_training_mean(recording):
    """The floor scores the mean as the model's loss scores its probe (agents.vla.heads.scene_state_loss)."""
    import torch

    floor = state_baselines(str(recording))["mean state"]
    train = scene_states(str(recording), "training")
    src = open_frames(str(recording), "validation")
    (s, e), = src.lang.indx[:1]
    val = src.read({"scene_obs": (int(s), int(e) + 1)})["scene_obs"]
    as_model = scene_state_loss(torch.as_tensor(np.broadcast_to(train.mean(0), (len(val), len(SCENE_STATE))).copy()),
                                torch.as_tensor(val))
    first = smooth_l1(scene_states(str(recording), "validation")[: len(val)] - train.mean(0))
    assert as_model.item() == pytest.approx(first, rel=1e-5) and floor["validation"] > 0 and floor["training"] > 0


def test_baselines_clip_normalises_as_clip_scale(recording):
    half = Frames.read(str(recording), "training", 0.5)
    assert np.abs(half.arm).max() <= 1.0
    full = Frames.read(str(recording), "training", 1.0)
    np.testing.assert_allclose(half.arm, np.clip(full.arm, -0.5, 0.5) / 0.5)
    with pytest.raises(ValueError, match="--clip must be > 0"):
        baselines(str(recording), clip=0)


def test_baselines_of_some_tasks_fit_and_score_their_frames_only(recording, capsys):
    table = baselines(str(recording), tasks=("open_drawer", "lift_blue_block_slider"))
    train = Frames.read(str(recording), "training", 1.0)
    mine = np.isin(train.task, ["open_drawer", "lift_blue_block_slider"])
    assert 0 < mine.sum() < len(mine)
    assert table["mean"]["training"] == pytest.approx(smooth_l1(train.arm[mine] - train.arm[mine].mean(0)))
    with pytest.raises(ValueError, match="--tasks stack_block: no annotated segments in the training split"):
        baselines(str(recording), tasks=("open_drawer", "stack_block"))
    with pytest.raises(SystemExit, match="no annotated segments of the tasks open_drawer in the validation split"):
        main([str(recording), "--tasks", "open_drawer"])  # the validation episode has a lift and a stack
