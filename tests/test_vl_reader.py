"""The LLaVA-style reader on hand-written files: examples, images, collate, and its error messages."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from harness.data.vl.config import VLDataConfig, build_vl_dataset, make_vl_loader
from harness.data.vl.llava import PAD_COLOR, LlavaDataset, collate_vl, load_image, read_llava_json


def write_image(path, size=(200, 200), color=(10, 200, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


@pytest.fixture
def folder(tmp_path):
    write_image(tmp_path / "imgs" / "a.png")
    write_image(tmp_path / "imgs" / "wide.jpg", size=(300, 100), color=(250, 0, 0))
    entries = [
        {"id": "one", "image": "imgs/a.png", "question_type": "color",
         "conversations": [{"from": "human", "value": "<image>\nWhat colour is it?"}, {"from": "gpt", "value": "green"}]},
        {"id": "multi", "image": "imgs/wide.jpg",
         "conversations": [{"from": "human", "value": "What is this?\n<image>"}, {"from": "gpt", "value": " a red bar "},
                           {"from": "user", "value": "Is it wide?"}, {"from": "assistant", "value": "yes"}]},
        {"id": "text", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "hello"}]},
    ]
    (tmp_path / "data.json").write_text(json.dumps(entries))
    return tmp_path


def test_reads_turns_as_single_turn_examples(folder):
    ds = LlavaDataset(folder / "data.json", skip_text_only=True)
    assert [(ex.id, ex.question, ex.answer, ex.question_type) for ex in ds.examples] == [
        ("one", "What colour is it?", "green", "color"),
        ("multi", "What is this?", "a red bar", ""),
        ("multi#1", "Is it wide?", "yes", ""),
    ]
    assert ds.examples[0].image == folder / "imgs" / "a.png"  # relative to the JSON's folder
    item = ds[1]
    assert item["image"].shape == (200, 200, 3) and item["image"].dtype == np.uint8
    batch = collate_vl([ds[0], ds[1], ds[2]])
    assert batch["images"].dtype == torch.uint8 and tuple(batch["images"].shape) == (3, 200, 200, 3)
    assert batch["prompts"] == ["What colour is it?", "What is this?", "Is it wide?"]
    assert batch["answers"] == ["green", "a red bar", "yes"] and batch["ids"] == ["one", "multi", "multi#1"]
    assert ds.describe()["images"] == 2


def test_a_question_keeps_its_lines():
    from harness.data.vl.llava import clean_question

    text = "<image>\nWhich animal is it?\n  A. cat \n\nB.   dog\nAnswer with the option's letter."
    assert clean_question(text) == "Which animal is it?\nA. cat\nB. dog\nAnswer with the option's letter."
    assert clean_question("What is   this?\n<image>") == "What is this?"


def test_images_are_padded_to_square_then_resized(folder):
    im = load_image(folder / "imgs" / "wide.jpg", 200)  # 300x100 red -> a red band between padding
    assert im.shape == (200, 200, 3)
    assert abs(int(im[100, 100, 0]) - 250) < 10 and im[100, 100, 1] < 10  # middle: the image
    assert tuple(im[5, 100]) == PAD_COLOR and tuple(im[195, 100]) == PAD_COLOR  # top and bottom: padding
    assert load_image(folder / "imgs" / "a.png", 64).shape == (64, 64, 3)


def test_image_root_overrides_the_json_folder(folder, tmp_path_factory):
    other = tmp_path_factory.mktemp("elsewhere")
    (other / "d.json").write_text((folder / "data.json").read_text())
    with pytest.raises(ValueError, match=r"d\.json: entry 0 \(id 'one'\): image 'imgs/a\.png' not found"):
        read_llava_json(other / "d.json", skip_text_only=True)
    assert len(read_llava_json(other / "d.json", image_root=folder, skip_text_only=True)) == 3


@pytest.mark.parametrize("entry, message", [
    ({"id": "x", "image": "imgs/a.png"}, r"'conversations' must be a non-empty list"),
    ({"id": "x", "image": "imgs/a.png", "conversations": [{"from": "human", "value": "q"}]},
     r"1 turns: expected human/gpt pairs"),
    ({"id": "x", "image": "imgs/a.png", "conversations": [{"from": "gpt", "value": "a"}, {"from": "human", "value": "q"}]},
     r"turn 0 is from 'gpt'; expected human or user"),
    ({"id": "x", "image": "imgs/a.png", "conversations": [{"from": "human", "value": "q"}, {"from": "gpt"}]},
     r"turn 1 must be \{'from': \.\.\., 'value': str\}"),
    ({"id": "x", "image": "imgs/a.png", "conversations": [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": "a"}]},
     r"turns 0-1: empty question or answer"),
    ({"id": "x", "image": "imgs/missing.png", "conversations": []}, r"image 'imgs/missing\.png' not found at .*missing\.png"),
    ({"id": "x", "image": ["a", "b"]}, r"'image' must be one path"),
    ({"id": "x", "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]},
     r"no 'image' \(text-only entries need skip_text_only=True\)"),
])
def test_malformed_entries_name_file_and_entry(folder, entry, message):
    path = folder / "bad.json"
    path.write_text(json.dumps([entry]))
    with pytest.raises(ValueError, match=r"bad\.json: entry 0 \(id 'x'\): " + message):
        read_llava_json(path)


def test_file_level_errors(folder):
    with pytest.raises(ValueError, match="no such LLaVA-style JSON file"):
        read_llava_json(folder / "nope.json")
    (folder / "broken.json").write_text("[{")
    with pytest.raises(ValueError, match=r"broken\.json: not valid JSON"):
        read_llava_json(folder / "broken.json")
    (folder / "dict.json").write_text("{}")
    with pytest.raises(ValueError, match="expected a JSON list"):
        read_llava_json(folder / "dict.json")
    (folder / "strings.json").write_text('["not an object"]')
    with pytest.raises(ValueError, match=r"strings\.json: entry 0: expected an object, got str"):
        read_llava_json(folder / "strings.json")
    (folder / "imgs" / "garbage.png").write_bytes(b"not a png")
    (folder / "g.json").write_text(json.dumps([{"id": "g", "image": "imgs/garbage.png", "conversations": [
        {"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}]))
    with pytest.raises(ValueError, match=r"example 'g': cannot read image"):
        LlavaDataset(folder / "g.json")[0]


def test_config_file_and_loader(folder):
    from harness.train.config import compose_config

    raw = compose_config(["data.path=unused", "output_dir=unused", "run_name=x", "sources=vl"])["sources"]["vl"]["options"]
    cfg = VLDataConfig.from_dict({**raw, "path": str(folder), "train_file": "data.json", "skip_text_only": True,
                                  "batch_size": 2})
    assert cfg.image_size == 200
    batches = list(make_vl_loader(cfg, train=True))
    assert len(batches) == 1 and len(batches[0]["prompts"]) == 2  # 3 examples, last partial batch dropped
    unshuffled = make_vl_loader(cfg, train=False, dataset=build_vl_dataset(cfg, train=True))
    assert [p for b in unshuffled for p in b["prompts"]] == ["What colour is it?", "What is this?", "Is it wide?"]
    with pytest.raises(ValueError, match=r"sources\.vl\.options: unknown keys \['ration'\]"):
        VLDataConfig.from_dict({"path": "x", "ration": 0.5})
    with pytest.raises(ValueError, match="batch_size and image_size must be >= 1"):
        VLDataConfig(path="x", batch_size=0)
