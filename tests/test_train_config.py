"""Training configs: the real hydra files compose into TrainConfig, and invalid ones fail before any work."""

from __future__ import annotations

import subprocess
import sys

import pytest

from harness.config_errors import ConfigError
from harness.train.config import TrainConfig, check_config
from tests.train_helpers import ENV, ROOT, cli, compose, config, dataset, train_here  # noqa: F401  (fixture)


def test_every_config_group_composes_and_round_trips(dataset, tmp_path):
    for overrides in ([], ["model=llava", "trainer=default", "eval=single_task"], ["eval=chains", "optim.schedule=cosine"],
                      ["+sweep=tiny_grid"]):
        cfg = config(dataset, tmp_path, *overrides)
        assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    cfg = config(dataset, tmp_path, "eval=single_task", "eval.tasks=[open_drawer]")
    assert cfg.eval.enabled and cfg.eval.tasks == ("open_drawer",) and cfg.trainer.device == "cpu"


@pytest.mark.parametrize("overrides, message", [
    (["model.backbone.family=kosmos"], "unknown backbone family 'kosmos'"),
    (["model.backbone.tiny=tiny_gpt"], "unknown tiny preset 'tiny_gpt'"),
    (["model.backbone.tiny=null", "model.backbone.pretrained=./no/such/backbone"], "folder ./no/such/backbone does not exist"),
    (["data.path=/no/such/dataset"], "data.path: dataset folder /no/such/dataset does not exist"),
    (["data.window_size=5"], "model.window_size=4 differs from data.window_size=5"),
    (["data.use_proprio=false"], "model.use_proprio=true needs data.use_proprio=true"),
    (["trainer.precision=fp16"], "fp16 needs a GPU"),
    (["trainer.device=cuda"], "CUDA is not available"),
    (["stage=1"], "stage 1 trains on vision-language data only"),
    (["+sources.vl={weight: 0.1}"], "sources.vl.options.path: the folder of the VL data"),
    (["+sources.depth={weight: 0.1}"], "sources.depth: no loss for this source"),
    (["optim.warmup_epochs=0.5"], "set optim.warmup_steps or optim.warmup_epochs, not both"),
    (["trainer.best_metric=rollout_success"], "needs the rollout callback"),
    (["eval=single_task", "eval.tasks=[fly_away]"], "fly_away"),
    (["init_from=/no/such/checkpoint"], "init_from: checkpoint folder /no/such/checkpoint does not exist"),
    (["resume=yes"], "resume: expected auto, never or a checkpoint folder; yes is none of them"),
])
def test_invalid_configs_fail_with_a_message_that_names_the_problem(dataset, tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        check_config(TrainConfig.from_dict(compose(dataset, tmp_path, *overrides)))


def test_unknown_keys_are_refused(dataset, tmp_path):
    d = compose(dataset, tmp_path)
    d["trainer"]["gradient_clip_val"] = 1.0  # RoboVLMs' key: silently ignored there, an error here
    with pytest.raises(ValueError, match=r"unknown keys \['gradient_clip_val'\]"):
        TrainConfig.from_dict(d)


def test_window_longer_than_a_segment_fails_before_the_model_is_built(dataset, tmp_path, monkeypatch):
    import agents.vla.model as model_module

    def no_model(*args, **kwargs):
        raise AssertionError("the model was built although the data cannot make windows")

    monkeypatch.setattr(model_module.VLAModel, "build", no_model)
    with pytest.raises(ConfigError, match=r"window_size=13 is longer than 1 of 4 annotated segments"):
        train_here(dataset, tmp_path / "run", "model.window_size=13")  # the data's window follows the model's
    assert not (tmp_path / "run").exists()


def test_global_batch_must_divide_into_micro_batches(dataset, tmp_path):
    with pytest.raises(ConfigError, match="global_batch_size=6 is not a multiple of batch_size x world size = 4 x 1"):
        train_here(dataset, tmp_path / "run", "trainer.global_batch_size=6")


def test_the_command_line_reports_an_invalid_config_in_one_line_and_does_no_work(dataset, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "harness.train", *cli(dataset, out, "model.backbone.family=kosmos")],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "harness.train: invalid configuration: unknown backbone family 'kosmos'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (out / "checkpoints").exists() and not (out / "metrics.jsonl").exists()
