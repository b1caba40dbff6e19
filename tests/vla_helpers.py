"""Shared pieces of the tests/test_vla_*.py files: tiny backbones saved to disk, configs, batches."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)  # the test machine is shared: one thread per test process

from transformers.utils import logging as hf_logging  # noqa: E402

from agents.vla.config import BackboneConfig, FinetuneConfig, HeadConfig, LossConfig, VLAConfig  # noqa: E402
from agents.vla.model import VLAModel  # noqa: E402
from agents.vla.tiny import TINY_PRESETS, build_tiny  # noqa: E402

hf_logging.disable_progress_bar()
hf_logging.set_verbosity_error()

CHUNK, WINDOW = 3, 4


def save_tiny(name: str, folder: Path) -> Path:
    """Build the tiny preset and `save_pretrained` model + processor into `folder` (like a hub checkpoint)."""
    torch.manual_seed(0)  # the same random backbone whatever ran before
    model, processor = build_tiny(name)
    model.save_pretrained(str(folder))
    processor.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """`tiny_dir(name)` -> folder with the saved tiny backbone (built once per test module)."""
    cache: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in cache:
            cache[name] = save_tiny(name, tmp_path_factory.mktemp(name))
        return cache[name]

    return get


def make_config(folder: Path, name: str, head: str = "lstm", history: str = "post", gripper: bool = False,
                proprio: bool = False, window: int = WINDOW, chunk: int = CHUNK, film: bool = False,
                **finetune) -> VLAConfig:
    return VLAConfig(
        backbone=BackboneConfig(family=TINY_PRESETS[name].family, pretrained=str(folder)),
        head=HeadConfig(type=head, hidden_size=64, num_layers=2, num_heads=4, n_bins=32),
        loss=LossConfig(arm_weight=1.0, gripper_weight=0.1),
        finetune=FinetuneConfig(**finetune),
        history=history, window_size=window, chunk_size=chunk, use_gripper_image=gripper, use_proprio=proprio,
        instruction_film=film,
    )


def chunk_for(head: str, history: str) -> int:
    """The tests' chunk: one action a frame for an interleaved discrete model (a longer chunk is refused: the next
    frame would see its targets, agents.vla.config.VLAConfig)."""
    return 1 if (head, history) == ("discrete", "interleaved") else CHUNK


def build_model(tiny_dir, name: str = "tiny_llava", seed: int = 0, **kw) -> VLAModel:
    folder = tiny_dir(name)  # first: saving a new tiny backbone draws random numbers, so the seed comes after
    torch.manual_seed(seed)
    return VLAModel.build(make_config(folder, name, **kw), verbose=False)


INSTRUCTIONS = ["open the drawer", "push the red block to the left", "turn on the light bulb", "stack the blocks"]


def make_batch(b: int = 2, w: int = WINDOW, chunk: int = CHUNK, gripper: bool = False, seed: int = 0,
               instructions: list[str] | None = None) -> dict:
    g = torch.Generator().manual_seed(seed)
    batch = {
        "rgb_static": torch.randint(0, 256, (b, w, 200, 200, 3), dtype=torch.uint8, generator=g),
        "robot_obs": torch.randn(b, w, 15, generator=g),
        "actions": torch.cat([torch.rand(b, w, chunk, 6, generator=g) * 2 - 1,
                              (torch.rand(b, w, chunk, 1, generator=g) > 0.5).float()], dim=-1),
        "action_mask": torch.ones(b, w, chunk, dtype=torch.bool),
        "instruction": list(instructions or INSTRUCTIONS[:b]),
        "task": ["task"] * b,
    }
    batch["action_mask"][:, -1, 1:] = False  # the last frame's chunk runs past the segment end
    if gripper:
        batch["rgb_gripper"] = torch.randint(0, 256, (b, w, 84, 84, 3), dtype=torch.uint8, generator=g)
    return batch


def frames_of(batch: dict, sample: int = 0) -> list[dict]:
    """The sample's frames as one-frame windows, as an agent receives them."""
    keys = [k for k in ("rgb_static", "rgb_gripper", "robot_obs") if k in batch]
    w = batch["rgb_static"].shape[1]
    return [{**{k: batch[k][sample : sample + 1, t : t + 1] for k in keys}, "instruction": [batch["instruction"][sample]]}
            for t in range(w)]
