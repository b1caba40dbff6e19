"""LLaVA-style conversation JSON: the format of the sim VQA data and of users' own VL data.

A file holds a JSON list of entries:

    {"id": "D_000012_drawer", "image": "images/D_000012.png",
     "conversations": [{"from": "human", "value": "<image>\\nIs the drawer open?"},
                       {"from": "gpt", "value": "yes"}, ...more human/gpt turns...],
     "question_type": "drawer"}          # optional; used to report accuracy per type

* `image` is a path relative to `image_root` (default: the JSON file's folder) or absolute. Every image is
  checked to exist when the file is read, so a missing one fails at start-up, naming file and entry.
* Turns alternate `human` -> `gpt` (`user` / `assistant` are accepted too). Each (human, gpt) pair becomes
  one example (question, answer) with the entry's image: multi-turn conversations are split into
  single-turn examples, and earlier turns are not given as context. `<image>` placeholders are removed
  from questions: the model's own chat template places the image.
* Entries without an image (text-only) are an error, or skipped with `skip_text_only=True`.
* Images are loaded as RGB uint8 and brought to `image_size` x `image_size` (default 200, the static
  camera's size, which the models are trained on): a non-square image is first padded to a square with
  the CLIP mean colour, centred (LLaVA-1.5's "pad" preprocessing, so nothing is cropped away), then
  resized (bicubic). Sim images are already 200x200 and are left untouched.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

IMAGE_TOKEN = "<image>"
HUMAN_ROLES, GPT_ROLES = ("human", "user"), ("gpt", "assistant")
PAD_COLOR = (122, 116, 104)  # the CLIP mean, as LLaVA-1.5 pads


@dataclass(frozen=True)
class VLExample:
    id: str  # "<entry id>" or "<entry id>#<turn>" for the turns after the first
    image: Path
    question: str
    answer: str
    question_type: str  # "" when the entry has none


def _entry_error(path: Path, index: int, entry: Any, what: str) -> ValueError:
    name = f" (id {entry['id']!r})" if isinstance(entry, dict) and "id" in entry else ""
    return ValueError(f"{path}: entry {index}{name}: {what}")


def clean_question(text: str) -> str:
    """The question without `<image>` placeholders, its lines' surrounding whitespace and empty lines; the line
    breaks stay (a multiple-choice question's options are lines)."""
    lines = (" ".join(line.split()) for line in text.replace(IMAGE_TOKEN, " ").splitlines())
    return "\n".join(line for line in lines if line)


def _turn_pairs(path: Path, index: int, entry: dict) -> list[tuple[str, str]]:
    turns = entry.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise _entry_error(path, index, entry, "'conversations' must be a non-empty list of turns")
    if len(turns) % 2:
        raise _entry_error(path, index, entry, f"{len(turns)} turns: expected human/gpt pairs")
    pairs = []
    for t, turn in enumerate(turns):
        roles = HUMAN_ROLES if t % 2 == 0 else GPT_ROLES
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            raise _entry_error(path, index, entry, f"turn {t} must be {{'from': ..., 'value': str}}, got {turn!r}")
        if turn.get("from") not in roles:
            raise _entry_error(path, index, entry, f"turn {t} is from {turn.get('from')!r}; expected {' or '.join(roles)} "
                                                   "(turns alternate human, gpt)")
    for t in range(0, len(turns), 2):
        question, answer = clean_question(turns[t]["value"]), turns[t + 1]["value"].strip()
        if not question or not answer:
            raise _entry_error(path, index, entry, f"turns {t}-{t + 1}: empty question or answer")
        pairs.append((question, answer))
    return pairs


def read_llava_json(path: str | Path, image_root: str | Path | None = None,
                    skip_text_only: bool = False) -> list[VLExample]:
    """The (image, question, answer) examples of a LLaVA-style JSON file (see the module doc)."""
    path = Path(path)
    root = Path(image_root) if image_root is not None else path.parent
    try:
        entries = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: no such LLaVA-style JSON file") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a JSON list of conversation entries, got {type(entries).__name__}")
    examples: list[VLExample] = []
    seen_images: dict[Path, bool] = {}
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise _entry_error(path, index, entry, f"expected an object, got {type(entry).__name__}")
        image = entry.get("image")
        if isinstance(image, list) and len(image) == 1:
            image = image[0]
        if image is None:
            if skip_text_only:
                continue
            raise _entry_error(path, index, entry, "no 'image' (text-only entries need skip_text_only=True)")
        if not isinstance(image, str):
            raise _entry_error(path, index, entry, f"'image' must be one path, got {image!r}")
        image_path = root / image
        if image_path not in seen_images:
            seen_images[image_path] = image_path.is_file()
        if not seen_images[image_path]:
            raise _entry_error(path, index, entry, f"image {image!r} not found at {image_path}")
        entry_id = str(entry.get("id", index))
        qtype = str(entry.get("question_type", ""))
        for t, (question, answer) in enumerate(_turn_pairs(path, index, entry)):
            examples.append(VLExample(entry_id if t == 0 else f"{entry_id}#{t}", image_path, question, answer, qtype))
    return examples


def load_image(path: str | Path, size: int = 200) -> np.ndarray:
    """RGB uint8 (size, size, 3): padded to a square with PAD_COLOR, then resized (bicubic) if needed."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        if w != h:
            side = max(w, h)
            square = Image.new("RGB", (side, side), PAD_COLOR)
            square.paste(im, ((side - w) // 2, (side - h) // 2))
            im = square
        if im.size != (size, size):
            im = im.resize((size, size), Image.Resampling.BICUBIC)
        return np.asarray(im, dtype=np.uint8).copy()


class LlavaDataset(Dataset):
    """Examples of a LLaVA-style JSON file; items are dicts: image uint8 (S, S, 3), prompt, answer,
    question_type, id."""

    def __init__(self, path: str | Path, image_root: str | Path | None = None, image_size: int = 200,
                 skip_text_only: bool = False):
        self.path = Path(path)
        self.image_size = image_size
        self.examples = read_llava_json(path, image_root, skip_text_only)
        if not self.examples:
            raise ValueError(f"{self.path}: no examples")

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        ex = self.examples[index]
        try:
            image = load_image(ex.image, self.image_size)
        except OSError as err:  # unreadable / not an image
            raise ValueError(f"{self.path}: example {ex.id!r}: cannot read image {ex.image}: {err}") from None
        return {"image": image, "prompt": ex.question, "answer": ex.answer, "question_type": ex.question_type, "id": ex.id}

    def describe(self) -> dict[str, Any]:
        types: dict[str, int] = {}
        for ex in self.examples:
            types[ex.question_type] = types.get(ex.question_type, 0) + 1
        return {"source": str(self.path), "examples": len(self), "images": len({ex.image for ex in self.examples}),
                "per_type": dict(sorted(types.items()))}


def collate_vl(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Items -> a VL batch: images uint8 (B, S, S, 3), prompts, answers, question_types, ids (lists)."""
    return {
        "images": torch.from_numpy(np.stack([it["image"] for it in items])),
        "prompts": [it["prompt"] for it in items],
        "answers": [it["answer"] for it in items],
        "question_types": [it["question_type"] for it in items],
        "ids": [it["id"] for it in items],
    }


def llava_entry(entry_id: str, image: str, question: str, answer: str, **extra: Any) -> dict[str, Any]:
    """One single-turn entry in the format this module reads."""
    return {"id": entry_id, "image": image,
            "conversations": [{"from": "human", "value": f"{IMAGE_TOKEN}\n{question}"}, {"from": "gpt", "value": answer}],
            **extra}
