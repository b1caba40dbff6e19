"""The symbolic state machine (docs/CALVIN.md#symbolic-transitions) and the symbolic view of info dicts."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from harness.tasks import SymbolicState, apply_task, is_valid_chain, symbolic_state, valid_tasks
from tests.task_infos import HELD, IN_DRAWER, ON_PLANK, ON_TABLE, Scene

START = {"led": 1, "lightbulb": 1, "slider": "left", "drawer": "open", "red_block": "slider_left",
         "blue_block": "table", "pink_block": "slider_right", "grasped": 0}


def test_valid_tasks_of_the_first_eval_condition():
    assert valid_tasks(START) == [
        "rotate_blue_block_right", "rotate_blue_block_left", "push_blue_block_right", "push_blue_block_left",
        "move_slider_right", "close_drawer", "lift_blue_block_table", "lift_pink_block_slider",
        "turn_off_lightbulb", "turn_off_led", "push_into_drawer",
    ]


def test_holding_a_block_allows_only_placing_and_stacking():
    holding = {**START, "blue_block": "grasped", "red_block": "table", "grasped": 1}
    # stack: blue on red is the one alternative that applies (pink is in the slider)
    assert valid_tasks(holding) == ["place_in_slider", "place_in_drawer", "stack_block"]
    assert apply_task(holding, "place_in_slider") == {**holding, "blue_block": "slider_left", "grasped": 0}
    assert apply_task(holding, "stack_block") == {
        **holding, "blue_block": "stacked_top", "red_block": "stacked_bottom", "grasped": 0}


def test_two_applicable_alternatives_make_a_task_invalid():
    both_on_table = {**START, "red_block": "grasped", "blue_block": "table", "pink_block": "table", "grasped": 1}
    assert "stack_block" not in valid_tasks(both_on_table)  # red on blue and red on pink both apply
    with pytest.raises(ValueError, match="stack_block.*not valid"):
        apply_task(both_on_table, "stack_block")


def test_push_into_drawer_and_unstack_effects():
    after = apply_task(START, "push_into_drawer")
    assert after == {**START, "blue_block": "drawer"}
    assert "lift_blue_block_drawer" in valid_tasks(after)
    stacked = {**START, "red_block": "stacked_top", "blue_block": "stacked_bottom"}
    assert apply_task(stacked, "unstack_block") == {**START, "red_block": "table", "blue_block": "table"}


def test_slider_lift_needs_the_door_on_the_other_side():
    assert "lift_red_block_slider" not in valid_tasks(START)  # red slider_left, door left covers it
    assert "lift_red_block_slider" in valid_tasks({**START, "slider": "right"})


def test_is_valid_chain():
    chain = ("rotate_blue_block_right", "move_slider_right", "lift_red_block_slider", "place_in_slider",
             "turn_off_lightbulb")
    assert is_valid_chain(START, chain)
    assert is_valid_chain(START, chain[1:] + chain[:1])  # the rotation can come last
    assert not is_valid_chain(START, (chain[0], chain[1], chain[3], chain[2], chain[4]))  # place before lift
    assert not is_valid_chain(START, (chain[0], chain[2], chain[1], chain[3], chain[4]))  # lift before the door moves
    assert not is_valid_chain(START, ("open_drawer",))  # already open
    assert not is_valid_chain(START, ("close_drawer", "push_blue_block_left", "rotate_blue_block_left"))
    assert is_valid_chain(START, ("push_blue_block_left", "rotate_blue_block_left"), distinct_categories=False)


def test_state_validation():
    with pytest.raises(ValueError, match="missing key 'drawer'"):
        valid_tasks({k: v for k, v in START.items() if k != "drawer"})
    with pytest.raises(ValueError, match="red_block='floor'"):
        valid_tasks({**START, "red_block": "floor"})
    with pytest.raises(ValueError, match="led='1'"):
        valid_tasks({**START, "led": "1"})
    with pytest.raises(ValueError, match="unknown symbolic state key"):
        valid_tasks({**START, "door": "left"})
    with pytest.raises(ValueError, match="unknown task"):
        apply_task(START, "fly")
    numpy_state = {**START, "led": np.int64(1), "pink_block": np.str_("slider_right")}
    assert valid_tasks(numpy_state) == valid_tasks(START)
    state = SymbolicState.from_mapping(numpy_state)
    assert type(state.led) is int and state.as_dict() == START


# --- the symbolic view of infos --------------------------------------------------------------------

def test_default_scene():
    assert symbolic_state(Scene().info()).as_dict() == {
        "led": 0, "lightbulb": 0, "slider": "right", "drawer": "closed", "red_block": "table",
        "blue_block": "table", "pink_block": "slider_left", "grasped": 0}


def test_joints_and_lights():
    s = symbolic_state(replace(Scene(), slide=0.15, drawer=0.12, lightbulb=1, led=1).info())
    assert (s.slider, s.drawer, s.lightbulb, s.led) == ("left", "open", 1, 1)
    s = symbolic_state(replace(Scene(), slide=0.13, drawer=0.10).info())
    assert (s.slider, s.drawer) == ("right", "closed")
    # the door threshold is half the scene's travel: 0.14 in D, 0.12 in C
    assert symbolic_state(replace(Scene(), slide=0.13).info(), scene="C").slider == "left"


def test_grasped_block():
    s = symbolic_state(Scene().block("red", pos=(0.1, -0.1, 0.6), touches=HELD).info())
    assert (s.red_block, s.grasped) == ("grasped", 1)
    # touching the robot and the table is not a grasp
    s = symbolic_state(Scene().block("red", touches=ON_TABLE + HELD).info())
    assert (s.red_block, s.grasped) == ("table", 0)


def test_stacked_blocks():
    scene = Scene().block("red", pos=(0.23, -0.12, 0.50), touches=("blue",))
    s = symbolic_state(scene.info())
    assert (s.red_block, s.blue_block) == ("stacked_top", "stacked_bottom")
    side_by_side = Scene().block("red", pos=(0.19, -0.12, 0.46), touches=ON_TABLE + ("blue",))
    s = symbolic_state(side_by_side.info())
    assert (s.red_block, s.blue_block) == ("table", "table")


def test_drawer_and_slider_blocks():
    s = symbolic_state(Scene().block("blue", pos=(0.2, -0.1, 0.362), touches=IN_DRAWER).info())
    assert s.blue_block == "drawer"
    s = symbolic_state(Scene().block("blue", pos=(0.07, 0.09, 0.461), touches=ON_PLANK).info())
    assert s.blue_block == "slider_right"  # right of D's bay centre (x -0.10)
    # in B the bay is 0.18 further right (centre 0.08): the same x is the left slot
    assert symbolic_state(Scene().block("blue", pos=(0.07, 0.09, 0.461), touches=ON_PLANK).info(), "B").blue_block \
        == "slider_left"


def test_position_fallback_without_contacts():
    falling_in_drawer = Scene().block("red", pos=(0.2, -0.15, 0.40), touches=())
    assert symbolic_state(falling_in_drawer.info()).red_block == "drawer"
    against_the_door = Scene().block("red", pos=(0.05, 0.09, 0.47), touches=("table:slide_link",))
    assert symbolic_state(against_the_door.info()).red_block == "slider_right"
    on_the_floor = Scene().block("red", pos=(0.6, -0.6, 0.02), touches=("plane",))
    assert symbolic_state(on_the_floor.info()).red_block == "table"


def test_bad_scene_raises():
    with pytest.raises(ValueError, match="unknown scene 'E'"):
        symbolic_state(Scene().info(), scene="E")
