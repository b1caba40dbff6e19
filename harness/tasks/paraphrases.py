"""The robustness suite's language axis: held-out paraphrases of the instructions, word-order changes, typos
(docs/ROBUSTNESS.md).

    perturbed_instruction("open_drawer", 0, rng)    # CALVIN's evaluation instruction, unchanged
    perturbed_instruction("open_drawer", 1, rng)    # a held-out paraphrase (heldout_instructions.yaml)
    perturbed_instruction("open_drawer", 2, rng)    # ... with its word order changed
    perturbed_instruction("open_drawer", 3, rng)    # ... and typos in it

The paraphrases were written for this project and are used nowhere else: neither the evaluation's nor
the training's instructions (harness/tasks/instructions.py) contain them.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import yaml

from harness.tasks.catalog import COLORS, TASK_NAMES, task_index
from harness.tasks.instructions import eval_instruction

HELDOUT_FILE = Path(__file__).with_name("heldout_instructions.yaml")
LANGUAGE_LEVELS = 3


@lru_cache(maxsize=1)
def heldout_instructions() -> dict[str, tuple[str, ...]]:
    """Task name -> its held-out paraphrases, from heldout_instructions.yaml ({c} filled in)."""
    templates = yaml.safe_load(HELDOUT_FILE.read_text())
    table: dict[str, tuple[str, ...]] = {}
    for name, phrasings in templates.items():
        for c in COLORS if "{c}" in name else ("",):
            table[name.format(c=c)] = tuple(p.format(c=c) for p in phrasings)
    missing = [t for t in TASK_NAMES if t not in table]
    if missing or set(table) - set(TASK_NAMES):
        raise ValueError(f"{HELDOUT_FILE}: expected paraphrases of exactly CALVIN's tasks; missing {missing}, "
                         f"unknown {sorted(set(table) - set(TASK_NAMES))}")
    return table


def reorder_words(text: str, rng: np.random.Generator) -> str:
    """The words after a random cut moved to the front ("open the drawer now" -> "the drawer now open")."""
    words = text.split()
    if len(words) < 2:
        return text
    cut = int(rng.integers(1, len(words)))
    return " ".join(words[cut:] + words[:cut])


def add_typos(text: str, rng: np.random.Generator) -> str:
    """One typo per four words (at least one): a letter dropped, doubled, or swapped with its neighbour,
    in words of three letters or more."""
    words = text.split()
    candidates = [i for i, w in enumerate(words) if len(w) >= 3]
    if not candidates:
        return text
    count = min(len(candidates), max(1, len(words) // 4))
    for i in rng.choice(candidates, size=count, replace=False):
        w, k = words[i], int(rng.integers(0, len(words[i]) - 1))
        kind = int(rng.integers(3))
        words[i] = w[:k] + w[k + 1:] if kind == 0 else w[:k] + w[k] + w[k:] if kind == 1 else w[:k] + w[k + 1] + w[k] + w[k + 2:]
    return " ".join(words)


def perturbed_instruction(task: str, level: int, rng: np.random.Generator) -> str:
    """`task`'s instruction at language level 0..3 (0: CALVIN's, unchanged; rng is not used)."""
    task_index(task)
    if not 0 <= level <= LANGUAGE_LEVELS:
        raise ValueError(f"language level must be 0..{LANGUAGE_LEVELS}, got {level}")
    if level == 0:
        return eval_instruction(task)
    phrasings = heldout_instructions()[task]
    text = phrasings[int(rng.integers(len(phrasings)))]
    if level >= 2:
        text = reorder_words(text, rng)
    if level >= 3:
        text = add_typos(text, rng)
    return text
