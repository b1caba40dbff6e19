"""Training configs: the real hydra files compose into TrainConfig, and invalid ones fail before any work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from dataclasses import fields, replace

import pytest
import yaml

from agents.vla.agent import ExecutionConfig
from agents.vla.config import VLAConfig
from harness.config_errors import ConfigError
from harness.data.config import DataConfig
from harness.data.windows import WindowSpec
from harness.train.checks import check_config
from harness.train.config import TrainConfig
from tests.train_helpers import ENV, ROOT, cli, compose, config, dataset, train_here  # noqa: F401  (fixture)


def test_every_config_group_composes_and_round_trips(dataset, tmp_path):
    for overrides in ([], ["model=llava", "trainer=default", "rollout=single_task"], ["rollout=chains", "optim.schedule=cosine"],
                      ["+sweep=tiny_grid"], ["rollout=chains", "rollout.env.scene=B", "rollout.env.backend=builtin"]):
        cfg = config(dataset, tmp_path, *overrides)
        assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    for experiment in ("e2e_cpu", "e2e_full_cpu"):  # both recipes carry what made the 8-task one work (TRAINING.md)
        cfg = config(dataset, tmp_path, f"+experiment={experiment}")
        assert TrainConfig.from_dict(cfg.to_dict()) == cfg
        assert cfg.data.start_repeats == 20 and cfg.model.instruction_film and cfg.data.format == "shards"
    # the 34-task recipe: the CNN told where things are; the tiny-VLM recipe it replaced differs in the model, the
    # scene-state loss and the schedule only, and its first stage is that recipe, shorter (TRAINING.md)
    recipe, vlm, first = (config(dataset, tmp_path, f"+experiment={e}")
                          for e in ("e2e_full_cpu", "e2e_full_cpu_vlm", "e2e_full_cpu_vlm_articulated"))
    assert recipe.model.backbone.family == "scratch" and recipe.model.loss.state_weight == 1.0 and recipe.model.loss.state_from == "image"
    # the gripper decided from the images, not copied from robot_obs (TRAINING.md, "Why it does not grasp")
    assert not recipe.model.proprio_gripper and recipe.model.loss.gripper_switch_weight == 10
    assert recipe.model.window_spec().proprio
    assert vlm.model.backbone.family == "idefics3" and vlm.model.loss.state_weight == 0 and vlm.optim.schedule == "cosine"
    # ... and keeps the gripper and probe settings it was measured with, which the CNN recipe changed since
    assert vlm.model.proprio_gripper and vlm.model.loss.gripper_switch_weight == 1 and vlm.model.loss.state_from == "lrn"
    assert vlm.data == recipe.data and vlm.trainer == replace(recipe.trainer, max_steps=40000, ema_decay=0.0)
    assert (recipe.optim.schedule, recipe.optim.decay_steps, recipe.trainer.max_steps) == ("wsd", 6000, 58000)
    assert recipe.trainer.ema_decay == 0.999  # every figure of the recipe is of its EMA weights
    assert first.model == vlm.model and first.data == vlm.data and first.trainer.batch_size == vlm.trainer.batch_size
    assert first.trainer.max_steps == 1000 < vlm.trainer.max_steps and first.optim.lr == vlm.optim.lr
    cfg = config(dataset, tmp_path, "rollout=single_task", "rollout.tasks=[open_drawer]")
    assert cfg.rollout.enabled and cfg.rollout.settings.tasks == ("open_drawer",) and cfg.trainer.device == "cpu"
    assert cfg.rollout.settings.workers == 0 and cfg.rollout.env.scene == "D"
    # the agent's execution options all reach the rollouts (exec_horizon stayed 1: chunk ran as replan)
    cfg = config(dataset, tmp_path, "rollout=chains", "rollout.execution=chunk", "rollout.exec_horizon=4",
                 "rollout.ensemble_decay=0.3")
    assert cfg.rollout.agent_execution() == ExecutionConfig("chunk", exec_horizon=4, ensemble_decay=0.3)


@pytest.mark.parametrize("overrides, message", [
    (["model.backbone.family=kosmos"], "unknown backbone family 'kosmos'"),
    (["model.backbone.tiny=tiny_gpt"], "unknown tiny preset 'tiny_gpt'"),
    (["model=scratch", "model.history=interleaved"], "family=scratch (the non-VLM baseline) does not support history="),
    (["model.backbone.tiny=null", "model.backbone.pretrained=./no/such/backbone"], "folder ./no/such/backbone does not exist"),
    (["data.path=/no/such/dataset"], "data.path: dataset folder /no/such/dataset does not exist"),
    (["trainer.precision=fp16"], "fp16 needs a GPU"),
    (["trainer.device=cuda"], "CUDA is not available"),
    (["stage=1"], "stage 1 trains on vision-language data only"),
    (["+sources.vl={weight: 0.1}"], "sources.vl.options.path: the folder of the VL data"),
    (["+sources.depth={weight: 0.1}"], "sources.depth: no loss for this source"),
    (["optim.warmup_epochs=0.5"], "set optim.warmup_steps or optim.warmup_epochs, not both"),
    (["trainer.global_batch_size=8", "trainer.grad_accum=2"], "trainer.grad_accum=2 would be ignored; set one of them"),
    (["trainer.dist_timeout_s=0"], "trainer.dist_timeout_s must be > 0 seconds, got 0"),
    (["optim.eps=0"], "optim.eps must be > 0, got 0"),
    (["trainer.best_metric=rollout_success"], "needs rollouts (rollout=single_task or rollout=chains)"),
    (["rollout=single_task", "rollout.tasks=[fly_away]"], "fly_away"),
    (["rollout=chains", "rollout.env.scene=E"], "env.scene: unknown scene 'E'"),
    (["rollout=chains", "rollout.workers=2"], "rollout.workers: rollouts run the model in the training process"),
    (["rollout=chains", "rollout.execution=replay"], "rollout: agent execution must be one of"),
    (["rollout=chains", "rollout.execution=chunk", "rollout.exec_horizon=0"], "rollout: exec_horizon must be >= 1"),
    (["rollout=chains", "+rollout.episodes=3"], "rollout: unknown key 'episodes'"),
    (["+data.window_size=5"], "data.window_size is now model.window_size (the data's windows follow the model)"),
    (["+model.fwd_pred_next_n=5"], "model: set chunk_size or its alias fwd_pred_next_n, not both"),
    (["trainer.max_steps=ten"], "trainer.max_steps must be an integer, got 'ten'"),
    (["trainer.max_cpu_s=0"], "trainer.max_cpu_s must be > 0 CPU seconds (or null for no budget), got 0"),
    (["init_from=/no/such/checkpoint"], "init_from: checkpoint folder /no/such/checkpoint does not exist"),
    (["resume=yes"], "resume: expected auto, never or a checkpoint folder; yes is none of them"),
])
def test_invalid_configs_fail_with_a_message_that_names_the_problem(dataset, tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        check_config(TrainConfig.from_dict(compose(dataset, tmp_path, *overrides)))


def test_the_model_owns_window_and_chunk():
    """window_size and chunk_size are VLAConfig's alone: no yaml file declares them (the presets build on its
    defaults), the data config has no such fields, and the dataset's windows come from the model's spec."""
    def keys(node):
        if isinstance(node, dict):
            for k, v in node.items():
                yield k
                yield from keys(v)
        elif isinstance(node, list):
            for v in node:
                yield from keys(v)

    shape, inputs = {"window_size", "chunk_size", "fwd_pred_next_n"}, {"use_gripper_image", "use_proprio"}
    for path in sorted((ROOT / "configs").rglob("*.yaml")):
        declared = set(keys(yaml.safe_load(path.read_text())))
        assert not shape & declared, path  # VLAConfig's defaults, overridden on the command line
        assert path.parent.name in ("model", "experiment") or not inputs & declared, path  # model presets only
    assert not (shape | inputs) & {f.name for f in fields(DataConfig)}
    assert VLAConfig(window_size=5, chunk_size=3).window_spec() == WindowSpec(5, 3, ("static",), True)


def test_old_spellings_on_the_command_line_name_the_new_setting(dataset, tmp_path):
    for override, message in (("eval=chains", "eval is now rollout"), ("eval.scene=B", "eval.scene is now rollout.env.scene"),
                              ("data.window_size=4", "data.window_size is now model.window_size")):
        proc = subprocess.run([sys.executable, "-m", "harness.train", *cli(dataset, tmp_path / "run", override)],
                              cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and f"harness.train: invalid configuration: {message}" in proc.stderr, proc.stderr
    assert not (tmp_path / "run").exists()


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


def test_shards_stored_at_another_size_than_the_models_input_are_refused(dataset, tmp_path):
    """Converted with --resize at 48 px for a model taking 32: training resized the 48 px frames again while the
    evaluation resizes the env's 200 px frames once, so the two saw other pixels. Refused before any step; at the
    model's size it trains."""
    from harness.data.shards import convert

    for edge in (48, 32):
        convert(dataset, tmp_path / f"shards_{edge}", resize={"rgb_static": edge}, progress=False)
    with pytest.raises(ValueError, match=r"rgb_static is stored at 48x48 px .* takes 32x32.* --resize rgb_static=32"):
        train_here(tmp_path / "shards_48", tmp_path / "run48", "data.format=shards", "trainer.max_steps=1")
    summary = train_here(tmp_path / "shards_32", tmp_path / "run32", "data.format=shards", "trainer.max_steps=1")
    assert summary["steps"] == 1


def test_bf16_on_a_cpu_without_native_bfloat16_is_said(tmp_path):
    """bf16 autocast on an AVX2-only CPU is emulated: the e2e_full_cpu recipe trained at 10 s a step against 0.8
    in fp32. The CPU's flags tell it."""
    from harness.train.checks import cpu_bf16_is_emulated

    def flags(*names: str) -> Path:
        path = tmp_path / "_".join(names or ("none",))
        path.write_text("processor\t: 0\nflags\t\t: fpu sse2 " + " ".join(names) + "\n")
        return path

    assert cpu_bf16_is_emulated(flags("avx2", "fma"))
    assert not cpu_bf16_is_emulated(flags("avx2", "avx512f", "avx512_bf16"))
    assert not cpu_bf16_is_emulated(flags("avx2", "amx_bf16"))
    assert not cpu_bf16_is_emulated(tmp_path / "no_such_file")
