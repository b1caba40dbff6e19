"""A checkpoint folder's layout (docs/ARCHITECTURE.md), and its digest. No torch here: the evaluation's main
process names a checkpoint by its digest (harness/eval/config.py, run_key) without loading a model.

    model.safetensors   all weights (tied tensors stored once); header metadata names family/head/history
    config.yaml         the resolved config: `model` (VLAConfig), `normalizer`, plus anything the caller adds
    normalizer.json     harness.data.normalization.ActionNormalizer
    tokenizer/          tokenizer.save_pretrained (with the added VLA tokens)
    processor/          processor.save_pretrained (image processor, chat template, tokenizer)
    backbone/config.json  the transformers config: the backbone is rebuilt from it, never downloaded

A training run's step folders hold its trainer state too (harness/train/state.py): not part of the agent.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

FORMAT = "vla-harness/1"
WEIGHTS, CONFIG, NORMALIZER = "model.safetensors", "config.yaml", "normalizer.json"
FOLDERS = ("tokenizer", "processor", "backbone")
REQUIRED = (WEIGHTS, CONFIG, NORMALIZER, "tokenizer", "processor", "backbone/config.json")


def agent_files(path: str | Path) -> list[Path]:
    """The files of the folder that an agent loads (those there), in a fixed order."""
    path = Path(path)
    top = [path / name for name in (WEIGHTS, CONFIG, NORMALIZER) if (path / name).is_file()]
    return top + sorted(f for d in FOLDERS if (path / d).is_dir() for f in (path / d).rglob("*") if f.is_file())


def checkpoint_digest(path: str | Path) -> str:
    """One digest (BLAKE2b, 128 bits) of what an agent loads from the folder: each file's relative name, size
    and bytes. The same for the folder moved or copied; another for other weights or another config (a step
    trained again with other settings)."""
    path = Path(path)
    digest = hashlib.blake2b(digest_size=16)
    for file in agent_files(path):
        digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        digest.update(file.stat().st_size.to_bytes(8, "little"))
        with open(file, "rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()
