"""Perturbations beyond the evaluation (docs/ROBUSTNESS.md#in-recordings-and-training-rollouts): perturbed
datasets from the recorder, each episode drawn from its own seed, and rollouts during training."""

from __future__ import annotations

import json

import numpy as np
import pytest

from harness.data.calvin_format import CalvinSplit
from harness.envs.perturbations import Perturbations
from harness.eval.specs import EnvConfig
from harness.record.__main__ import main as record_main
from harness.record.recorder import RecordConfig, episode_seed, plan_episode
from harness.tasks import initial_state
from harness.train.config import TrainConfig
from tests.train_helpers import config, dataset  # noqa: F401  (fixture)
from tests.vla_helpers import build_model, tiny_dir  # noqa: F401  (fixture)

PERTURB = {"camera": 2, "distractors": 1}


def first_static_frame(perturb: Perturbations, seed: int | None, condition) -> np.ndarray:
    env = EnvConfig(perturb=perturb).build(cameras=("static", "gripper"))
    try:
        if seed is not None:
            env.new_chain(seed)
        return env.reset(*initial_state(condition, "D"))["rgb_obs"]["rgb_static"]
    finally:
        env.close()


def test_a_perturbed_recording_draws_each_episode_from_its_own_seed(tmp_path):
    out = tmp_path / "ds"
    assert record_main([str(out), "--episodes", "2", "--val-episodes", "0", "--chain-length", "1", "--tasks",
                        "turn_on_led", "--workers", "1", "--seed", "4", "--perturb", "camera=2", "distractors=1"]) == 0
    cfg = RecordConfig(out=str(out), episodes=2, val_episodes=0, chain_length=1, tasks=("turn_on_led",), workers=1,
                       seed=4, perturb=Perturbations(**PERTURB))
    settings = json.loads((out / "recording.json").read_text())
    seeds = [episode_seed(cfg, "training", "D", i) for i in range(2)]
    assert settings["perturb"] == PERTURB and settings["episode_seeds"] == {"training": {"D": seeds}}
    assert settings["perturbations"]["camera"]["amount"] == "2 cm, 0.5 deg"
    split = CalvinSplit(str(out), "training")
    firsts = [split.load_frame(int(start), ("rgb_static",))["rgb_static"] for start, _ in split.episodes]
    for i, frame in enumerate(firsts):
        condition = plan_episode(cfg, "training", "D", i).condition
        # the recorded frame is the perturbed env's after new_chain(the episode's seed), and not the plain one
        np.testing.assert_array_equal(frame, first_static_frame(Perturbations(**PERTURB), seeds[i], condition))
        assert not np.array_equal(frame, first_static_frame(Perturbations(), None, condition))
    assert seeds[0] != seeds[1]
    # the same folder continues only with the same perturbation
    with pytest.raises(ValueError, match="other settings \\(perturb\\)"):
        from harness.record.recorder import record_dataset

        record_dataset(RecordConfig(**{**cfg.__dict__, "perturb": Perturbations(camera=1)}), progress=False)


def test_a_recording_takes_the_envs_axes_only(tmp_path, capsys):
    with pytest.raises(ValueError, match="perturb: language act in the evaluation's rollout"):
        RecordConfig(out="x", perturb=Perturbations(language=1))
    with pytest.raises(SystemExit):
        record_main([str(tmp_path / "x"), "--perturb", "fog=1"])
    assert "unknown keys ['fog']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        record_main([str(tmp_path / "x"), "--perturb", "camera"])
    assert "expected AXIS=LEVEL" in capsys.readouterr().err


ROLLOUT = ("rollout=single_task", "rollout.tasks=[open_drawer]", "rollout.episodes_per_task=2", "rollout.ep_len=2",
           "rollout.env.perturb.camera=1", "rollout.env.perturb.distractors=2")


def test_training_rollout_env_takes_perturbations(dataset, tmp_path):  # noqa: F811
    cfg = config(dataset, tmp_path, *ROLLOUT)
    assert cfg.rollout.env.perturb == Perturbations(camera=1, distractors=2)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(Exception, match="env.perturb.camera: a level 0..3"):
        config(dataset, tmp_path, "rollout=chains", "rollout.env.perturb.camera=5")


@pytest.mark.slow
def test_training_rollouts_run_perturbed(dataset, tiny_dir, tmp_path):  # noqa: F811
    """The rollout callback's evaluation runs on the perturbed env (each episode its own draw, as in any
    evaluation: `new_chain(job seed)`), and says so in its results."""
    from harness.data.normalization import ActionNormalizer
    from harness.train.callbacks import rollout

    cfg = config(dataset, tmp_path, *ROLLOUT, "rollout.output=true")
    metrics = rollout(build_model(tiny_dir), ActionNormalizer(), cfg.rollout, tmp_path / "rollout")
    assert "rollout/score" in metrics
    results = json.loads((tmp_path / "rollout" / "results.json").read_text())
    assert set(results["env"]["perturbations"]) == {"camera", "distractors"}
