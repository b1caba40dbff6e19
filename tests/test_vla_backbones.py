"""Backbone adapters on tiny models of every family, saved with save_pretrained and loaded with from_pretrained."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from agents.vla.backbones import ADAPTERS, adapter_class, load_backbone
from agents.vla.config import BackboneConfig
from agents.vla.tiny import TINY_PRESETS, build_tokenizer
from tests.vla_helpers import tiny_dir  # noqa: F401  (fixture)

FAMILIES = ["tiny_llava", "tiny_paligemma", "tiny_idefics3", "tiny_qwen2_vl"]
SIZES = ((200, 200), (84, 84))


def _load(tiny_dir, name):
    return load_backbone(BackboneConfig(family=TINY_PRESETS[name].family, pretrained=str(tiny_dir(name))))


@pytest.mark.parametrize("name", FAMILIES)
def test_prompt_has_one_placeholder_block_per_image_and_processor_pixels(tiny_dir, name):
    bb = _load(tiny_dir, name)
    ids = bb.prompt_ids("open the drawer", SIZES)
    n_image_tokens = sum(i == bb.image_token_id for i in ids)
    frames = [torch.randint(0, 256, (2, h, w, 3), dtype=torch.uint8) for h, w in SIZES]
    pixels = bb.pixel_inputs(frames)
    # the image features the model produces must fill exactly the placeholders of one sequence per sample
    hidden = bb.forward(torch.tensor([ids, ids]), torch.ones(2, len(ids), dtype=torch.long), pixels)
    assert hidden.shape == (2, len(ids), bb.hidden_size)
    assert n_image_tokens > 0
    assert "drawer" in bb.tokenizer.decode(ids)

    # tensor preprocessing reproduces the family's own (PIL) image processor on a smooth image
    for h, w in SIZES:
        yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
        image = (torch.stack([yy, xx, (yy + xx) / 2], -1) * 255).to(torch.uint8)
        ours = bb.pixel_inputs([image[None]])["pixel_values"].float()
        theirs = torch.as_tensor(np.asarray(bb.processor.image_processor(images=[image.numpy()])["pixel_values"]))
        assert ours.shape == theirs.shape
        assert (ours - theirs.float()).abs().mean() < 0.01


def test_unknown_family_lists_known_ones():
    with pytest.raises(ValueError, match="known families") as err:
        adapter_class("blip9")
    for family in ADAPTERS:
        assert family in str(err.value)


def test_family_must_match_model(tiny_dir):
    with pytest.raises(ValueError, match="expects model_type"):
        load_backbone(BackboneConfig(family="paligemma", pretrained=str(tiny_dir("tiny_llava"))))


def test_backbone_config_needs_exactly_one_source():
    with pytest.raises(ValueError, match="exactly one"):
        BackboneConfig(family="llava")
    with pytest.raises(ValueError, match="exactly one"):
        BackboneConfig(family="llava", tiny="tiny_llava", pretrained="x")


def test_offline_tokenizer_covers_the_task_vocabulary_and_any_text():
    tok = build_tokenizer("llava")
    for word in ("drawer", "slider", "block", "switch", "rotate"):
        assert len(tok(" " + word, add_special_tokens=False)["input_ids"]) == 1, word
    text = "Grasp the ünknown widget, 42 times!"
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text


@pytest.mark.skipif(importlib.util.find_spec("num2words") is None, reason="SmolVLMProcessor needs num2words")
def test_smolvlm_family(tiny_dir):
    bb = _load(tiny_dir, "tiny_smolvlm")
    ids = bb.prompt_ids("open the drawer", SIZES[:1])
    pixels = bb.pixel_inputs([torch.randint(0, 256, (1, 200, 200, 3), dtype=torch.uint8)])
    assert bb.forward(torch.tensor([ids]), None, pixels).shape[1] == len(ids)
