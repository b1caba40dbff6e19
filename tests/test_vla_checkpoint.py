"""Checkpoint folders: round trip, no unpickling, and errors that name what does not match."""

from __future__ import annotations

import json
import pickle
import shutil

import numpy as np
import pytest
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from agents import load_agent
from agents.vla.checkpoint import load_checkpoint, save_checkpoint
from harness.data.normalization import ActionNormalizer
from tests.vla_helpers import build_model, make_batch, tiny_dir  # noqa: F401  (fixture)


@pytest.fixture(scope="module")
def saved(tiny_dir, tmp_path_factory):
    """A saved tiny-LLaVA LSTM checkpoint (with gripper camera and proprio) and the model it came from."""
    model = build_model(tiny_dir, "tiny_llava", head="lstm", gripper=True, proprio=True).eval()
    path = tmp_path_factory.mktemp("ckpt") / "run"
    save_checkpoint(path, model, ActionNormalizer(clip=0.5), extra_config={"data": {"split": "debug"}})
    return path, model


def _copy(path, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(path, dst)
    return dst


def _with_config(saved_path, tmp_path, edit) -> object:
    """A copy of the checkpoint whose config.yaml went through `edit(config)`."""
    path = _copy(saved_path, tmp_path)
    config = yaml.safe_load((path / "config.yaml").read_text())
    edit(config)
    (path / "config.yaml").write_text(yaml.safe_dump(config))
    return path


def _obs(rng) -> dict:
    return {"rgb_obs": {"rgb_static": rng.integers(0, 256, (200, 200, 3), dtype=np.uint8),
                        "rgb_gripper": rng.integers(0, 256, (84, 84, 3), dtype=np.uint8)},
            "robot_obs": rng.normal(size=15)}


def test_folder_layout(saved):
    path, _ = saved
    for name in ("model.safetensors", "config.yaml", "normalizer.json", "tokenizer", "processor", "backbone/config.json"):
        assert (path / name).exists(), name
    config = yaml.safe_load((path / "config.yaml").read_text())
    assert config["model"]["head"]["type"] == "lstm" and config["data"] == {"split": "debug"}
    assert config["normalizer"]["clip"] == 0.5


def test_saved_then_loaded_gives_identical_actions(saved):
    path, model = saved
    loaded = load_checkpoint(path).model
    batch = make_batch(gripper=True)
    torch.testing.assert_close(loaded.predict(batch), model.predict(batch), atol=0, rtol=0)
    from agents.vla.agent import VLAAgent

    a, b = load_agent(path), VLAAgent(model, ActionNormalizer(clip=0.5))
    rng = np.random.default_rng(0)
    for _ in range(6):
        obs = _obs(rng)
        np.testing.assert_array_equal(a.step(obs, "open the drawer"), b.step(obs, "open the drawer"))


@pytest.mark.parametrize("name", ["tiny_paligemma", "tiny_kosmos2", "tiny_smolvlm", "tiny_mllama"])
def test_lora_checkpoint_round_trip(tiny_dir, tmp_path, name):
    model = build_model(tiny_dir, name, head="gpt", mode="lora", lora_r=4, train_vision=False).eval()
    with torch.no_grad():  # make the adapters matter (lora_B starts at zero)
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    save_checkpoint(tmp_path / "lora", model, ActionNormalizer())
    batch = make_batch()
    torch.testing.assert_close(load_checkpoint(tmp_path / "lora").model.predict(batch), model.predict(batch))


@pytest.mark.parametrize("name,head,film", [("scratch", "lstm", False), ("tiny_mllama", "discrete", False),
                                            ("tiny_idefics3", "gpt", True)])
def test_a_checkpoint_of_another_structure_gives_identical_actions(tiny_dir, tmp_path, name, head, film):
    """The non-VLM baseline (a transformers model of this project, rebuilt from its saved config), the
    cross-attention family, fully trainable, and the instruction FiLM (trained away from its identity
    start): saved then loaded, the same actions, in the model and as agents."""
    model = build_model(tiny_dir, name, head=head, gripper=True, proprio=True, film=film).eval()
    if film:
        torch.nn.init.normal_(model.film.net[-1].weight, std=0.5)
    save_checkpoint(tmp_path / "ckpt", model, ActionNormalizer())
    batch = make_batch(gripper=True)
    torch.testing.assert_close(load_checkpoint(tmp_path / "ckpt").model.predict(batch), model.predict(batch), atol=0, rtol=0)
    from agents.vla.agent import VLAAgent

    a, b = load_agent(tmp_path / "ckpt"), VLAAgent(model, ActionNormalizer())
    rng = np.random.default_rng(0)
    for _ in range(5):
        obs = _obs(rng)
        np.testing.assert_array_equal(a.step(obs, "open the drawer"), b.step(obs, "open the drawer"))


def test_loading_never_unpickles(saved, monkeypatch):
    path, _ = saved

    def refuse(*args, **kwargs):
        raise AssertionError("checkpoint loading tried to unpickle")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(np, "load", refuse)
    load_agent(path)


def test_missing_file(saved, tmp_path):
    path = _copy(saved[0], tmp_path)
    (path / "normalizer.json").unlink()
    with pytest.raises(ValueError, match="missing normalizer.json"):
        load_checkpoint(path)


def test_corrupted_weights_file(saved, tmp_path):
    path = _copy(saved[0], tmp_path)
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cannot read model.safetensors"):
        load_checkpoint(path)


def test_missing_weights_are_named(saved, tmp_path):
    path = _copy(saved[0], tmp_path)
    with safe_open(str(path / "model.safetensors"), framework="pt") as f:
        meta = f.metadata()
    tensors = load_file(str(path / "model.safetensors"))
    victim = next(k for k in tensors if k.startswith("head.lstm"))
    del tensors[victim]
    save_file(tensors, str(path / "model.safetensors"), metadata=meta)
    with pytest.raises(ValueError, match=f"missing keys: {victim}"):
        load_checkpoint(path)


@pytest.mark.parametrize("edit,message", [
    (lambda c: c["model"]["head"].update(type="gpt"), "different head: .* head='lstm' but config.yaml says 'gpt'"),
    (lambda c: c["model"].update(history="interleaved"), "different history"),
    (lambda c: c["model"]["head"].update(hidden_size=32), "shape mismatch .*head\\."),
    (lambda c: c["model"]["head"].update(hiden_size=3), "model.head: unknown keys \\['hiden_size'\\]"),
], ids=["head", "history", "head-size", "unknown-key"])
def test_config_mismatch_is_named(saved, tmp_path, edit, message):
    with pytest.raises(ValueError, match=message):
        load_checkpoint(_with_config(saved[0], tmp_path, edit))


def test_different_normalisation_is_named(saved, tmp_path):
    path = _copy(saved[0], tmp_path)
    (path / "normalizer.json").write_text(json.dumps(ActionNormalizer(clip=1.0).to_dict()))
    with pytest.raises(ValueError, match="different normalisation"):
        load_checkpoint(path)


def test_bfloat16_inference(saved):
    path, model = saved
    agent = load_agent(path, dtype="bfloat16")
    assert next(agent.model.parameters()).dtype == torch.bfloat16
    action = agent.step(_obs(np.random.default_rng(1)), "open the drawer")
    assert action.shape == (7,) and np.isfinite(action).all()


REMOTE_MAP = {"AutoConfig": "remote.RemoteConfig", "AutoModel": "remote.RemoteModel",
              "AutoModelForImageTextToText": "remote.RemoteModel", "AutoTokenizer": ["remote.RemoteTokenizer", None],
              "AutoProcessor": "remote.RemoteProcessor", "AutoImageProcessor": "remote.RemoteImageProcessor"}
LOCAL_CLASSES = {"model_type": "remote", "tokenizer_class": "RemoteTokenizer", "processor_class": "RemoteProcessor",
                 "image_processor_type": "RemoteImageProcessor"}


def plant_remote_code(folder, marker) -> None:
    """What a hub repo with custom code looks like: `auto_map` in its config files, class names that
    transformers does not know, and a .py file (here one that leaves `marker` behind when imported)."""
    classes = "".join(f"class {name}:\n    pass\n\n\n" for name in
                      ("RemoteConfig", "RemoteModel", "RemoteTokenizer", "RemoteProcessor", "RemoteImageProcessor"))
    (folder / "remote.py").write_text(f"open({str(marker)!r}, 'w').close()\n\n\n{classes}")
    for path in folder.glob("*config.json"):
        config = json.loads(path.read_text())
        for d in (config, config.get("image_processor")):
            if isinstance(d, dict):
                d["auto_map"] = REMOTE_MAP
                d.update({k: v for k, v in LOCAL_CLASSES.items() if k in d})
        path.write_text(json.dumps(config))


@pytest.mark.parametrize("part", ["backbone", "tokenizer", "processor"])
def test_loading_never_offers_nor_runs_code_from_the_checkpoint(saved, tmp_path, monkeypatch, part):
    path = _copy(saved[0], tmp_path)
    marker = tmp_path / "remote_code_ran"
    plant_remote_code(path / part, marker)
    prompts = []
    monkeypatch.setattr("builtins.input", lambda *question: prompts.append(question) or "y")  # a user who says yes
    try:
        load_checkpoint(path)
    except ValueError as err:  # transformers refuses: the folder needs its own code
        assert "custom code" in str(err) and str(path / part) in str(err)
    assert not prompts and not marker.exists()


def test_a_malformed_normalizer_is_one_line_naming_the_file(saved, tmp_path):
    from harness.eval.specs import AgentConfig

    path = _copy(saved[0], tmp_path)
    for content in ("{not json", '["clip_scale"]', '{"mode": "zscore", "mean": [0, 0, 0, 0, 0, "x"], "std": [1, 1, 1, 1, 1, 1]}'):
        (path / "normalizer.json").write_text(content)
        for load in (lambda: load_checkpoint(path), AgentConfig("vla", {"checkpoint": str(path)}).check):
            with pytest.raises(ValueError) as err:
                load()
            assert f"{path / 'normalizer.json'}: not a valid action normaliser" in str(err.value)
            assert "\n" not in str(err.value)


@pytest.mark.parametrize("remote", ["tokenizer", "model"])
def test_the_sentence_embedder_never_offers_nor_runs_code(saved, tmp_path, monkeypatch, remote):
    from harness.data.lang_embedding import SentenceEmbedder

    folder = tmp_path / "encoder"
    shutil.copytree(saved[0] / "tokenizer", folder)
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    marker = tmp_path / "remote_code_ran"
    plant_remote_code(folder, marker)
    if remote == "model":  # the tokenizer as saved, the model's config pointing at remote code
        shutil.copy(saved[0] / "tokenizer" / "tokenizer_config.json", folder / "tokenizer_config.json")
    prompts = []
    monkeypatch.setattr("builtins.input", lambda *question: prompts.append(question) or "y")
    with pytest.raises(ValueError, match="custom code"):
        SentenceEmbedder(str(folder))
    assert not prompts and not marker.exists()


def test_a_checkpoint_link_is_resolved_once_before_anything_is_read(saved, tmp_path):
    """Loading a run's `checkpoints/last` while training moves it on: everything comes from the folder the link
    named when loading began, and the loaded checkpoint names that folder."""
    step = _copy(saved[0], tmp_path)
    (tmp_path / "last").symlink_to("copy", target_is_directory=True)
    assert load_checkpoint(tmp_path / "last").path == step.resolve()


@pytest.mark.parametrize("damaged", ["processor/tokenizer.json", "processor/tokenizer_config.json", "backbone/config.json"])
def test_a_damaged_backbone_or_tokenizer_file_names_the_checkpoint(saved, tmp_path, damaged):
    path = _copy(saved[0], tmp_path)
    target = path / damaged
    target.write_text(target.read_text()[:40])  # cut short
    with pytest.raises(ValueError, match=rf"checkpoint {path}: "):
        load_checkpoint(path)


def test_the_digest_names_what_the_agent_loads_wherever_the_folder_is(saved, tmp_path):
    """harness.eval's run key names a checkpoint by this digest: a moved copy is the same agent, other weights or
    another config another, and the trainer's own state is not the agent."""
    from agents.vla.layout import agent_files, checkpoint_digest

    path, _ = saved
    copy = _copy(path, tmp_path)
    assert checkpoint_digest(copy) == checkpoint_digest(path)
    names = [f.relative_to(path).as_posix() for f in agent_files(path)]
    assert names[:3] == ["model.safetensors", "config.yaml", "normalizer.json"] and "backbone/config.json" in names
    (copy / "trainer_state.json").write_text("{}")  # a step folder's trainer state
    assert checkpoint_digest(copy) == checkpoint_digest(path)
    other = _with_config(path, tmp_path / "edited", lambda c: c.update(data={"split": "other"}))
    assert checkpoint_digest(other) != checkpoint_digest(path)
    weights = load_file(str(copy / "model.safetensors"))
    name = next(iter(weights))
    weights[name] = weights[name] + 1e-3
    with safe_open(str(path / "model.safetensors"), framework="pt") as f:
        metadata = f.metadata()
    save_file(weights, str(copy / "model.safetensors"), metadata=metadata)
    assert checkpoint_digest(copy) != checkpoint_digest(path)


def test_a_checkpoint_of_a_bf16_backbone_loads_in_one_dtype(tiny_dir, tmp_path):
    """backbone.dtype=bfloat16 (the LoRA presets) rebuilt the backbone in bf16 beside fp32 heads: a model that runs
    only under autocast, while the doctor's probe and the instruction check run it without. Without a dtype the
    checkpoint loads in float32, with one in that one."""
    from dataclasses import replace

    from agents.vla.model import VLAModel
    from tests.vla_helpers import make_config

    folder = tiny_dir("tiny_llava")
    cfg = make_config(folder, "tiny_llava", head="mlp")
    model = VLAModel.build(replace(cfg, backbone=replace(cfg.backbone, dtype="bfloat16")), verbose=False).eval()
    save_checkpoint(tmp_path / "bf16", model, ActionNormalizer())
    loaded = load_checkpoint(tmp_path / "bf16").model
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}
    assert loaded.cfg.backbone.dtype == "bfloat16"  # the config as trained, for a checkpoint saved again
    trained = model.state_dict()
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16, torch.float32}  # as trained: mixed
    assert all(torch.equal(v, trained[k].float()) for k, v in loaded.state_dict().items())  # bf16 -> fp32 exactly
    with pytest.raises(RuntimeError, match="same dtype"):
        model.predict(make_batch())  # the mixed model, as trained, runs only under autocast
    assert torch.isfinite(loaded.predict(make_batch())).all()
    assert {p.dtype for p in load_checkpoint(tmp_path / "bf16", dtype=torch.bfloat16).model.parameters()} == {torch.bfloat16}


@pytest.mark.parametrize("head", ["mlp", "lstm"])
def test_an_agent_steps_a_model_with_a_bf16_backbone_as_it_trains(tiny_dir, head):
    """The training's rollouts step the model being trained: a bf16 backbone beside fp32 heads (the LoRA presets)
    failed every step outside autocast (dtype mismatch), each subtask an agent_error, every rollout scored 0."""
    from dataclasses import replace

    from agents.vla.agent import VLAAgent
    from agents.vla.model import VLAModel
    from tests.serve_helpers import observations
    from tests.vla_helpers import make_config

    cfg = make_config(tiny_dir("tiny_llava"), "tiny_llava", head=head, proprio=True)
    model = VLAModel.build(replace(cfg, backbone=replace(cfg.backbone, dtype="bfloat16")), verbose=False)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16, torch.float32}
    agent = VLAAgent(model, ActionNormalizer())
    agent.reset()
    actions = [agent.step(obs, "open the drawer") for obs in observations(3)]
    assert all(a.shape == (7,) and a.dtype == np.float64 and np.isfinite(a).all() for a in actions)


def test_auto_dtype_is_bf16_only_where_the_gpu_has_it(monkeypatch):
    """torch's is_bf16_supported() counts emulation: `auto` picked bf16 on a V100 or T4 (slow, emulated) where the
    docs promise fp16. The device's compute capability decides now (8.0, Ampere, and later: native bf16)."""
    from agents.vla.agent import resolve_dtype

    asked = []

    def capability(device=None):
        asked.append(device)
        return {0: (7, 0), 1: (8, 0)}[torch.device(device).index]

    monkeypatch.setattr(torch.cuda, "get_device_capability", capability)
    assert resolve_dtype("auto", torch.device("cuda:0")) == torch.float16
    assert resolve_dtype("auto", torch.device("cuda:1")) == torch.bfloat16
    assert asked == [torch.device("cuda:0"), torch.device("cuda:1")]  # the agent's own GPU, not the current one
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32 and resolve_dtype("bf16", torch.device("cpu")) == torch.bfloat16
