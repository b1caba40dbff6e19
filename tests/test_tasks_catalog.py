"""The 34 tasks, their categories and transitions (docs/CALVIN.md#symbolic-transitions)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness.tasks import CATEGORY_NAMES, TASK_CATEGORY, TASK_NAMES, TASKS, task_spec

EXPECTED_NAMES = [
    "rotate_red_block_right", "rotate_red_block_left", "rotate_blue_block_right", "rotate_blue_block_left",
    "rotate_pink_block_right", "rotate_pink_block_left", "push_red_block_right", "push_red_block_left",
    "push_blue_block_right", "push_blue_block_left", "push_pink_block_right", "push_pink_block_left",
    "move_slider_left", "move_slider_right", "open_drawer", "close_drawer", "lift_red_block_table",
    "lift_red_block_slider", "lift_red_block_drawer", "lift_blue_block_table", "lift_blue_block_slider",
    "lift_blue_block_drawer", "lift_pink_block_table", "lift_pink_block_slider", "lift_pink_block_drawer",
    "place_in_slider", "place_in_drawer", "stack_block", "unstack_block", "turn_on_lightbulb",
    "turn_off_lightbulb", "turn_on_led", "turn_off_led", "push_into_drawer",
]
EXPECTED_CATEGORIES = [1] * 12 + [2, 2, 3, 3] + [4, 5, 6] * 3 + [7, 7, 10, 11, 8, 8, 8, 8, 9]


def test_names_and_categories_in_calvins_order():
    assert list(TASK_NAMES) == EXPECTED_NAMES
    assert [TASK_CATEGORY[n] for n in TASK_NAMES] == EXPECTED_CATEGORIES
    assert [t.index for t in TASKS] == list(range(34))
    assert sorted(CATEGORY_NAMES) == list(range(1, 12))


def _as_sets(spec) -> list[tuple[dict, dict]]:
    return [({k: set(v) for k, v in t.condition.items()}, dict(t.effect)) for t in spec.transitions]


def test_stack_block_alternatives_in_order():
    got = _as_sets(task_spec("stack_block"))
    pairs = [("red", "blue"), ("red", "pink"), ("blue", "red"), ("blue", "pink"), ("pink", "red"), ("pink", "blue")]
    assert got == [
        ({f"{t}_block": {"grasped"}, f"{b}_block": {"table"}, "grasped": {1}},
         {f"{t}_block": "stacked_top", f"{b}_block": "stacked_bottom", "grasped": 0})
        for t, b in pairs
    ]


def test_push_into_drawer_alternatives():
    red, blue, pink = _as_sets(task_spec("push_into_drawer"))
    assert red == ({"red_block": {"table"}, "blue_block": {"slider_right", "slider_left"},
                    "pink_block": {"slider_right", "slider_left"}, "drawer": {"open"}, "grasped": {0}},
                   {"red_block": "drawer", "grasped": 0})
    assert pink[1] == {"pink_block": "drawer", "grasped": 0} and blue[0]["blue_block"] == {"table"}


def _parse_side(text: str) -> dict[str, set]:
    out: dict[str, set] = {}
    for item in text.strip("[] ").split(", "):
        key, value = item.split("=")
        out[key] = {int(v) if v.isdigit() else v for v in value.split("|")}
    return out


def test_transitions_match_the_docs_table():
    """Every row of docs/CALVIN.md#symbolic-transitions, parsed and compared."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "CALVIN.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| (\d+) \| (\w+) \| (\d+) \| (\[.*\]) \|$", text.replace("\\|", "|"), flags=re.M)
    assert len(rows) == 34
    for index, name, category, transitions in rows:
        spec = TASKS[int(index)]
        assert (spec.name, spec.category) == (name, int(category))
        expected = []
        for alternative in transitions.split(" OR "):
            cond, effect = alternative.split(" → ")
            expected.append((_parse_side(cond), {k: v.pop() for k, v in _parse_side(effect).items()}))
        assert _as_sets(spec) == expected, name


def test_unknown_task_raises():
    with pytest.raises(ValueError, match="unknown task 'lift_green_block_table'.*rotate_red_block_right"):
        task_spec("lift_green_block_table")
