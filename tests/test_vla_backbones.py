"""Backbone adapters on tiny models of every family, saved with save_pretrained and loaded with from_pretrained."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents.vla.backbones import ADAPTERS, adapter_class, load_backbone
from agents.vla.config import BackboneConfig
from agents.vla.tiny import TINY_PRESETS, build_tokenizer
from harness.data.images import resize_hwc
from tests.vla_helpers import tiny_dir  # noqa: F401  (fixture)

FAMILIES = ["tiny_llava", "tiny_paligemma", "tiny_idefics3", "tiny_smolvlm", "tiny_qwen2_vl", "tiny_kosmos2",
            "tiny_mllama", "scratch"]
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


@pytest.mark.parametrize("name", ["tiny_idefics3", "tiny_llava", "tiny_paligemma"])
def test_frames_stored_at_the_input_size_give_the_same_pixels(tiny_dir, name):
    """Shards converted with --resize to the model's input size (harness.data.images, the same resize)
    feed the model exactly the pixels it would make of the full frames."""
    bb = _load(tiny_dir, name)
    full = torch.randint(0, 256, (3, 200, 200, 3), dtype=torch.uint8)
    (h, w), crop = bb.target_size(200, 200)
    assert h == w and crop in (None, (h, w))  # square frames: a centre crop of the resized frame is all of it
    stored = torch.from_numpy(resize_hwc(full.numpy(), h, bb._settings()[0]))
    assert torch.equal(bb.pixel_inputs([stored])["pixel_values"], bb.pixel_inputs([full])["pixel_values"])


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


def test_smolvlm_prompt_expands_like_its_processor(tiny_dir, monkeypatch):
    """SmolVLMProcessor cannot be built here (its video processor needs torchvision), so the adapter expands the
    placeholders itself. Reference: SmolVLM's own processor, with only the class check of its (absent) video
    processor skipped, and Idefics3's (the same layout for images that are not split)."""
    from transformers import AutoTokenizer, Idefics3Processor, SmolVLMProcessor

    folder = tiny_dir("tiny_smolvlm")
    bb = _load(tiny_dir, "tiny_smolvlm")
    assert bb.processor.settings == {"image_seq_len": 9} and bb.processor.chat_template
    monkeypatch.setattr(SmolVLMProcessor, "check_argument_for_proper_class", lambda self, name, arg: None)
    ip = bb.processor.image_processor
    references = [
        SmolVLMProcessor(image_processor=ip, tokenizer=AutoTokenizer.from_pretrained(folder), video_processor=None,
                         image_seq_len=bb.image_seq_len),
        Idefics3Processor(image_processor=ip, tokenizer=AutoTokenizer.from_pretrained(folder), image_seq_len=bb.image_seq_len),
    ]
    for sizes in (SIZES[:1], SIZES):
        text = bb.format_text("open the drawer", len(sizes))
        ours = bb.prompt_ids("open the drawer", sizes)
        block = ["<fake_token_around_image>", "<global-img>"] + ["<image>"] * 9 + ["<fake_token_around_image>"]
        assert bb.tokenizer.convert_ids_to_tokens(ours)[5 : 5 + 12 * len(sizes)] == block * len(sizes)
        for ref in references:
            dummies = [np.zeros((h, w, 3), dtype=np.uint8) for h, w in sizes]
            assert ours == list(ref(text=[text], images=[dummies])["input_ids"][0]), type(ref).__name__


def test_kosmos2_prompt_and_mask_match_its_processor_and_forward(tiny_dir):
    bb = _load(tiny_dir, "tiny_kosmos2")
    prompt = "What action should the robot take to open the drawer?"
    ref = bb.processor(text=[prompt], images=[np.zeros((200, 200, 3), dtype=np.uint8)], num_image_tokens=bb.n_latents)
    ids = bb.prompt_ids(prompt, SIZES[:1])
    assert ids == list(ref["input_ids"][0])
    mask = bb.image_mask(torch.tensor([ids]))
    assert mask[0].tolist() == [bool(m) for m in ref["image_embeds_position_mask"][0]]
    # two cameras: one <image> ... </image> block each, one after the other
    two = bb.prompt_ids(prompt, SIZES)
    block = ids[1 : bb.n_latents + 3]  # <image> latents </image>
    assert two == ids[:1] + block + block + ids[1 + len(block) :]
    assert int(bb.image_mask(torch.tensor([two])).sum()) == 2 * bb.n_latents

    # the adapter's own embedding step equals Kosmos-2's forward (padded batch, one image per sequence)
    short = bb.prompt_ids("stack the blocks", SIZES[:1])
    input_ids = torch.full((2, len(ids)), bb.tokenizer.pad_token_id)
    input_ids[0], input_ids[1, : len(short)] = torch.tensor(ids), torch.tensor(short)
    attention = (torch.arange(len(ids)) < torch.tensor([[len(ids)], [len(short)]])).long()
    pixels = bb.pixel_inputs([torch.randint(0, 256, (2, 200, 200, 3), dtype=torch.uint8)])
    with torch.no_grad():
        ours = bb.lm_head(bb.forward(input_ids, attention, pixels))
        theirs = bb.model(input_ids=input_ids, attention_mask=attention, image_embeds_position_mask=bb.image_mask(input_ids),
                          pixel_values=pixels["pixel_values"]).logits
    torch.testing.assert_close(ours[attention.bool()], theirs[attention.bool()])
    with pytest.raises(ValueError, match="no pixels"):
        bb.forward(input_ids, attention, None)


def test_mllama_inputs_match_its_processor(tiny_dir):
    """Ids, tiles (a 200 px frame is 2x2 tiles of 96 px, an 84 px one a single tile), aspect ratios and the
    cross-attention mask are what MllamaProcessor gives for the same text and images; a cached run over two
    segments (the second with its own images) equals one run over the whole sequence."""
    bb = _load(tiny_dir, "tiny_mllama")
    prompt = "What action should the robot take to open the drawer?"
    frames = [torch.randint(0, 256, (1, h, w, 3), dtype=torch.uint8) for h, w in SIZES]
    ref = bb.processor(text=[bb.format_text(prompt, 2)], images=[[f[0].numpy() for f in frames]], return_tensors="pt")
    ids = bb.prompt_ids(prompt, SIZES)
    assert ids == ref["input_ids"][0].tolist()
    ours = bb.pixel_inputs(frames)
    torch.testing.assert_close(ours["pixel_values"], ref["pixel_values"].float(), atol=0.02, rtol=0)
    assert torch.equal(ours["aspect_ratio_ids"], ref["aspect_ratio_ids"])
    assert torch.equal(ours["aspect_ratio_mask"], ref["aspect_ratio_mask"]) and ours["aspect_ratio_mask"].sum() == 5
    mask = bb.extra_inputs(torch.tensor([ids]), None, ours, None, None)["cross_attention_mask"]
    assert torch.equal(mask, ref["cross_attention_mask"])

    from agents.vla.backbones import BackboneCache

    both = torch.tensor([ids + ids[:-1]])  # a second segment: its own two images, then text
    others = [255 - f for f in frames]
    with torch.no_grad():
        whole = bb.forward(both, None, bb.pixel_inputs(frames + others))
        cache = BackboneCache()
        first = bb.forward(both[:, : len(ids)], None, bb.pixel_inputs(frames), cache=cache)
        second = bb.forward(both[:, len(ids):], None, bb.pixel_inputs(others), cache=cache)
    torch.testing.assert_close(torch.cat([first, second], 1), whole, atol=1e-5, rtol=1e-4)
