"""The model config group (configs/model), the agent config, and config validation."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
import yaml

from agents.vla.agent import ExecutionConfig, load_agent
from agents.vla.config import VLAConfig
from agents.vla.tiny import TinySize, build_tiny
from harness.train.config import compose_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("path", sorted((CONFIGS / "model").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_model_config_builds_a_vla_config(path):
    """Each preset composes over VLAConfig's defaults (`- base`) and sets only some of the keys."""
    preset = yaml.safe_load(path.read_text())
    assert preset["defaults"] == ["base", "_self_"]
    resolved = compose_config(["data.path=unused", "output_dir=unused", "run_name=x", f"model={path.stem}"])["model"]
    cfg = VLAConfig.from_dict(resolved)
    assert resolved == VLAConfig().to_dict() | {k: resolved[k] for k in preset if k != "defaults"}
    assert VLAConfig.from_dict(cfg.to_dict()) == cfg
    if cfg.backbone.tiny is None:
        assert "/" in cfg.backbone.pretrained  # a hub id


def test_agent_config_keys_are_load_agent_arguments():
    keys = set(yaml.safe_load((CONFIGS / "agent" / "vla.yaml").read_text())) - {"name"}
    accepted = set(inspect.signature(load_agent).parameters) | set(ExecutionConfig.__dataclass_fields__)
    assert keys <= accepted, keys - accepted


def test_chunk_size_reads_robovlms_fwd_pred_next_n():
    """Configs and checkpoints written with RoboVLMs' name still load; the code reads either name."""
    cfg = VLAConfig.from_dict({"fwd_pred_next_n": 5})
    assert cfg.chunk_size == cfg.fwd_pred_next_n == 5 and "fwd_pred_next_n" not in cfg.to_dict()
    with pytest.raises(ValueError, match="set chunk_size or its alias fwd_pred_next_n, not both"):
        VLAConfig.from_dict({"fwd_pred_next_n": 5, "chunk_size": 5})


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match=r"model: unknown keys \['windw_size'\]"):
        VLAConfig.from_dict({"windw_size": 8})
    with pytest.raises(ValueError, match="head.type must be one of"):
        VLAConfig.from_dict({"head": {"type": "transformer"}})
    with pytest.raises(ValueError, match="history must be one of"):
        VLAConfig.from_dict({"history": "pre"})
    with pytest.raises(ValueError, match=r"agent: unknown keys \[.execute.\]"):
        load_agent("nowhere", execute="chunk")


def test_tiny_size_overrides():
    model, _ = build_tiny("tiny_llava", hidden=64, vision_hidden=32, layers=1)
    text = model.config.get_text_config()
    assert (text.hidden_size, text.num_hidden_layers, model.config.vision_config.hidden_size) == (64, 1, 32)
    with pytest.raises(ValueError, match="unknown tiny_size fields"):
        build_tiny("tiny_llava", width=3)
    with pytest.raises(ValueError, match="unknown tiny backbone"):
        build_tiny("tiny_gpt5")
    assert TinySize().hidden == 256


def test_a_tiny_preset_is_built_in_backbone_dtype():
    """backbone.dtype held for hub models (from_pretrained loads in it) but a tiny preset was built in float32
    whatever it said: a tiny stand-in for a bf16 LoRA preset trained in another dtype than the model it stands for."""
    from agents.vla.backbones import load_backbone
    from agents.vla.config import BackboneConfig

    backbone = load_backbone(BackboneConfig(tiny="tiny_llava", dtype="bfloat16", tiny_size={"hidden": 64, "layers": 1}))
    assert {p.dtype for p in backbone.model.parameters()} == {torch.bfloat16}
    assert torch.get_default_dtype() == torch.float32  # the process's default is left as it was
    assert {p.dtype for p in load_backbone(BackboneConfig(tiny="tiny_llava")).model.parameters()} == {torch.float32}
