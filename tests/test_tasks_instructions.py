"""Evaluation instructions (docs/CALVIN.md#instructions) and the project's training phrasings."""

from __future__ import annotations

import numpy as np
import pytest

from harness.tasks import (
    TASK_NAMES,
    eval_instruction,
    sample_training_instruction,
    training_instruction,
    training_instructions,
)


@pytest.mark.parametrize("task, text", [
    ("rotate_red_block_right", "take the red block and rotate it to the right"),
    ("rotate_pink_block_left", "take the pink block and rotate it to the left"),
    ("push_blue_block_left", "go push the blue block left"),
    ("move_slider_right", "push the sliding door to the right side"),
    ("open_drawer", "pull the handle to open the drawer"),
    ("close_drawer", "push the handle to close the drawer"),
    ("lift_blue_block_table", "grasp and lift the blue block"),
    ("lift_pink_block_slider", "lift the pink block from the sliding cabinet"),
    ("lift_red_block_drawer", "Take the red block from the drawer"),
    ("place_in_slider", "store the grasped block in the sliding cabinet"),
    ("place_in_drawer", "store the grasped block in the drawer"),
    ("push_into_drawer", "slide the block that it falls into the drawer"),
    ("stack_block", "stack the grasped block"),
    ("unstack_block", "remove the stacked block"),
    ("turn_on_lightbulb", "use the switch to turn on the light bulb"),
    ("turn_off_led", "press the button to turn off the led light"),
])
def test_eval_instructions(task, text):
    assert eval_instruction(task) == text


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def test_training_phrasings():
    for task in TASK_NAMES:
        phrasings = training_instructions(task)
        assert len(phrasings) >= 6
        assert len({_norm(p) for p in phrasings}) == len(phrasings), task
        assert _norm(eval_instruction(task)) not in {_norm(p) for p in phrasings}, task
        for color in ("red", "blue", "pink"):
            assert all((color in p) == (f"_{color}_" in task) for p in phrasings), (task, color)
    all_eval = {_norm(eval_instruction(t)) for t in TASK_NAMES}
    assert not all_eval & {_norm(p) for t in TASK_NAMES for p in training_instructions(t)}


def test_phrasing_selection_is_deterministic():
    phrasings = training_instructions("open_drawer")
    assert [training_instruction("open_drawer", i) for i in range(len(phrasings) + 1)] == [*phrasings, phrasings[0]]
    a = [sample_training_instruction("open_drawer", np.random.default_rng(4)) for _ in range(3)]
    assert len(set(a)) == 1
    rng = np.random.default_rng(0)
    assert {sample_training_instruction("stack_block", rng) for _ in range(200)} == set(training_instructions("stack_block"))
    with pytest.raises(ValueError, match="unknown task"):
        eval_instruction("open_drawers")
    with pytest.raises(ValueError, match="unknown task"):
        training_instruction("open_drawers", 0)
