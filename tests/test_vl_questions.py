"""Question types and answers on facts set by hand (no simulator), and the tiny tokenizer's coverage of them."""

from __future__ import annotations

import re

import numpy as np
import pytest

from agents.vla.tiny import _SPECIALS, build_tokenizer
from harness.data.vl import questions as q
from harness.data.vl.questions import QUESTION_TYPES, ask_all, ask_left_right, block_list, caption
from harness.data.vl.scene import BlockFacts, SceneFacts


def facts(blocks: dict[str, tuple[str, float]], hidden: tuple[str, ...] = (), drawer_open: bool = True) -> SceneFacts:
    """colour -> (place, u); hidden blocks have no visible pixels."""
    return SceneFacts("D", drawer_open, "left", True, False, {
        c: BlockFacts(c, place, 0 if c in hidden else 200, u, 100.0, (0.0, 0.0, 0.46)) for c, (place, u) in blocks.items()})


def asked(f: SceneFacts, qtype: str, seeds: int = 400) -> dict[str, str]:
    return {qa.question: qa.answer for s in range(seeds) for qa in ask_all(f, np.random.default_rng(s)) if qa.type == qtype}


def test_block_lists_follow_the_colour_order():
    assert block_list(["pink"]) == "the pink block"
    assert block_list(["pink", "red"]) == "the red block and the pink block"
    assert block_list(["blue", "pink", "red"]) == "the red block, the blue block and the pink block"


def test_left_right_margin_and_answers():
    f = facts({"red": ("table", 50.0), "blue": ("table", 100.0), "pink": ("table", 150.0)})
    got = asked(f, "left_right")
    assert got["Which block is to the left of the pink block?"] == "the red block and the blue block"
    assert got["Which block is to the right of the red block?"] == "the blue block and the pink block"
    assert got["Which block is to the left of the red block?"] == "no block"
    near = facts({"red": ("table", 100.0), "blue": ("table", 100.0 + q.SIDE_MARGIN - 1), "pink": ("table", 150.0)})
    got = asked(near, "left_right")
    assert got and all(question.endswith("of the pink block?") for question in got)  # red/blue: ambiguous
    assert ask_left_right(facts({"red": ("table", 1.0), "blue": ("table", 2.0), "pink": ("table", 3.0)}),
                          np.random.default_rng(0)) is None


def test_counts_and_surfaces_with_a_stack():
    f = facts({"red": ("table", 50.0), "blue": ("on_red", 50.0), "pink": ("drawer", 150.0)})
    assert set(asked(f, "count_table").values()) == {"one"}
    surfaces = asked(f, "block_on_surface")
    assert surfaces["Which block is on the table?"] == "the red block"
    assert surfaces["Which block is in the drawer?"] == "the pink block"
    assert surfaces["Which block is in the sliding cabinet?"] == "no block"
    assert asked(f, "block_place")["Where is the blue block?"] == "on the red block"


def test_closed_drawer_and_hidden_blocks_are_not_asked():
    f = facts({"red": ("slider_left", 50.0), "blue": ("table", 100.0), "pink": ("table", 150.0)}, hidden=("red",),
              drawer_open=False)
    surfaces = asked(f, "block_on_surface")
    assert set(surfaces) == {q.format(surface="on the table") for q in q.SURFACE_PHRASINGS}
    assert all("red" not in question for question in asked(f, "block_place"))
    hidden_on_table = facts({"red": ("table", 50.0), "blue": ("table", 100.0), "pink": ("table", 150.0)}, hidden=("red",))
    assert asked(hidden_on_table, "count_table") == {}


def test_caption_names_the_visible_blocks():
    f = facts({"red": ("table", 50.0), "blue": ("slider_right", 100.0), "pink": ("on_red", 50.0)}, hidden=("blue",))
    assert caption(f) == ("The drawer is open, the sliding door is on the left, the green light is on and the yellow "
                          "light is off. The red block is on the table and the pink block is on the red block.")


def test_every_type_is_asked_in_a_plain_scene():
    f = facts({"red": ("table", 50.0), "blue": ("drawer", 100.0), "pink": ("slider_right", 150.0)})
    assert [qa.type for qa in ask_all(f, np.random.default_rng(0))] == list(QUESTION_TYPES)


def _all_texts() -> list[str]:
    """Every phrasing (with each colour, surface and side filled in) and every answer word."""
    texts = [p for p, _ in q.DRAWER_PHRASINGS + q.DOOR_PHRASINGS]
    texts += [p.format(light=name) for p, _ in q.LIGHT_PHRASINGS for names in q.LIGHT_NAMES.values() for name in names]
    texts += list(q.COUNT_PHRASINGS + q.CAPTION_PHRASINGS)
    for color in ("red", "blue", "pink"):
        texts += [p.format(color=color) for p in q.PLACE_PHRASINGS]
        texts += [p.format(color=color, side=side) for p in q.SIDE_PHRASINGS for side in ("left", "right")]
    texts += [p.format(surface=words) for p in q.SURFACE_PHRASINGS for words, _ in q.SURFACES.values()]
    texts += ["yes no open closed left right on off", *q.NUMBER_WORDS, q.NO_BLOCK, *q.PLACE_ANSWERS.values()]
    texts += [block_list(["red", "blue", "pink"]), q.place_answer("on_pink")]
    texts += [caption(facts({"red": ("table", 50.0), "blue": ("drawer", 100.0), "pink": ("on_red", 50.0)}))]
    return texts


@pytest.mark.parametrize("family", sorted(_SPECIALS))
def test_tiny_tokenizer_has_every_vqa_word_as_one_token(family):
    tok = build_tokenizer(family)
    words = {w for text in _all_texts() for w in re.findall(r"[A-Za-z]+", text)}
    long = {w for w in words if len(tok(" " + w, add_special_tokens=False)["input_ids"]) != 1}
    assert not long, f"add these words to agents/vla/tiny.py VQA_CORPUS: {sorted(long)}"
    first = {text.split()[0] for text in _all_texts()}  # also without a leading space (sentence starts)
    assert all(len(tok(w, add_special_tokens=False)["input_ids"]) == 1 for w in first if w.isalpha())
