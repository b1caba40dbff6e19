"""The 34-task oracle on synthetic infos: each task's completing change is detected, near misses are not.

Thresholds and contact rules: docs/CALVIN.md#task-thresholds. Scenes come from tests/task_infos.py, whose uids
and (optionally) table link numbers differ from the built-in scene's, so hard-coded ids would fail.
"""

from __future__ import annotations

from dataclasses import replace
from typing import NamedTuple

import pytest

from harness.tasks import TASK_NAMES, InfoView, TaskOracle
from tests.task_infos import COLORS, HELD, IN_DRAWER, ON_PLANK, ON_TABLE, SHUFFLED_LINKS, Scene

BASE = Scene()
ORACLE = TaskOracle()


class Case(NamedTuple):
    task: str
    start: Scene
    end: Scene
    expected: bool
    label: str


def _moved(scene: Scene, color: str, dx: float = 0.0, dy: float = 0.0, dz: float = 0.0, **changes) -> Scene:
    x, y, z = getattr(scene, color).pos
    return scene.block(color, pos=(x + dx, y + dy, z + dz), **changes)


def _yawed(scene: Scene, color: str, dyaw: float, roll: float = 0.0, pitch: float = 0.0) -> Scene:
    r, p, y = getattr(scene, color).rpy_deg
    return scene.block(color, rpy_deg=(r + roll, p + pitch, y + dyaw))


def _rotate_cases(color: str) -> list[Case]:
    right, left = f"rotate_{color}_block_right", f"rotate_{color}_block_left"
    return [
        Case(right, BASE, _yawed(BASE, color, -61), True, "yaw -61"),
        Case(right, BASE, _yawed(BASE, color, -59), False, "yaw -59 is under 60"),
        Case(right, BASE, _yawed(BASE, color, -61, roll=29), True, "roll 29 is allowed"),
        Case(right, BASE, _yawed(BASE, color, -61, roll=31), False, "roll 31 is too much"),
        Case(right, BASE, _yawed(BASE, color, -61, pitch=-31), False, "pitch -31 is too much"),
        Case(right, BASE, _moved(_yawed(BASE, color, -90), color, dx=0.09), True, "moved 9 cm"),
        Case(right, BASE, _moved(_yawed(BASE, color, -90), color, dx=0.08, dy=0.07), False, "moved 10.6 cm"),
        Case(right, BASE, _yawed(BASE, color, -90).block(color, touches=HELD), False, "held in the air"),
        Case(right, BASE, _yawed(BASE, color, -90).block(color, touches=ON_TABLE + HELD), True, "robot still on it"),
        Case(right, BASE, _yawed(BASE, color, -185), False, "-185 wraps to +175"),
        Case(left, BASE, _yawed(BASE, color, -185), True, "-185 wraps to +175"),
        Case(left, BASE, _yawed(BASE, color, 61), True, "yaw +61"),
        Case(left, BASE, _yawed(BASE, color, 59), False, "yaw +59 is under 60"),
        Case(left, BASE, _yawed(BASE, color, -61), False, "wrong direction"),
    ]


def _push_cases(color: str) -> list[Case]:
    right, left = f"push_{color}_block_right", f"push_{color}_block_left"
    start = BASE.block(color, touches=ON_TABLE)
    return [
        Case(right, start, _moved(start, color, dx=0.11), True, "+11 cm"),
        Case(right, start, _moved(start, color, dx=0.09), False, "+9 cm"),
        Case(right, start, _moved(start, color, dy=0.2), False, "moved along y"),
        Case(right, start.block(color, touches=ON_TABLE + HELD), _moved(start, color, dx=0.11, touches=ON_TABLE + HELD),
             True, "robot contacts are ignored"),
        Case(right, start, _moved(start, color, dx=0.11, touches=ON_TABLE + ("plane",)), True, "end adds a contact"),
        Case(right, start, _moved(start, color, dx=0.11, touches=ON_PLANK), False, "changed surface"),
        Case(right, start, _moved(start, color, dx=0.11, touches=()), False, "no contact at the end"),
        Case(right, start.block(color, touches=HELD), _moved(start, color, dx=0.11), False, "no surface at the start"),
        Case(left, start, _moved(start, color, dx=-0.11), True, "-11 cm"),
        Case(left, start, _moved(start, color, dx=-0.09), False, "-9 cm"),
        Case(left, start, _moved(start, color, dx=0.11), False, "wrong direction"),
    ]


def _joint_cases() -> list[Case]:
    return [
        Case("move_slider_left", BASE, replace(BASE, slide=0.16), True, "+0.16"),
        Case("move_slider_left", BASE, replace(BASE, slide=0.15), False, "+0.15 is not more than 0.15"),
        Case("move_slider_left", replace(BASE, slide=0.28), replace(BASE, slide=0.0), False, "wrong direction"),
        Case("move_slider_right", replace(BASE, slide=0.28), replace(BASE, slide=0.12), True, "-0.16"),
        Case("move_slider_right", replace(BASE, slide=0.28), replace(BASE, slide=0.14), False, "-0.14"),
        Case("open_drawer", BASE, replace(BASE, drawer=0.13), True, "+0.13"),
        Case("open_drawer", BASE, replace(BASE, drawer=0.11), False, "+0.11"),
        Case("open_drawer", BASE, replace(BASE, slide=0.2), False, "the door is not the drawer"),
        Case("close_drawer", replace(BASE, drawer=0.22), replace(BASE, drawer=0.09), True, "-0.13"),
        Case("close_drawer", replace(BASE, drawer=0.22), replace(BASE, drawer=0.11), False, "-0.11"),
    ]


def _lift_cases(color: str) -> list[Case]:
    cases = []
    surfaces = {"table": (ON_TABLE, 0.05), "slider": (ON_PLANK, 0.03), "drawer": (IN_DRAWER, 0.05)}
    for surface, (touches, dz) in surfaces.items():
        task = f"lift_{color}_block_{surface}"
        start = BASE.block(color, touches=touches)
        wrong = ON_PLANK if surface != "slider" else ON_TABLE
        cases += [
            Case(task, start, _moved(start, color, dz=dz + 0.01, touches=HELD), True, "lifted"),
            Case(task, start, _moved(start, color, dz=dz - 0.01, touches=HELD), False, "not high enough"),
            Case(task, start, _moved(start, color, dz=dz + 0.01, touches=()), False, "not held (thrown)"),
            Case(task, start, _moved(start, color, dz=dz + 0.01, touches=HELD + ("table:base_link",)), False,
                 "still touching the table"),
            Case(task, start.block(color, touches=wrong), _moved(start, color, dz=dz + 0.01, touches=HELD), False,
                 "started on another surface"),
            Case(task, start.block(color, touches=touches + HELD), _moved(start, color, dz=dz + 0.01, touches=HELD),
                 True, "robot may touch it at the start"),
        ]
    return cases


def _place_cases() -> list[Case]:
    held = BASE.block("red", pos=(0.0, 0.0, 0.6), touches=HELD)
    cases = []
    for task, dest in (("place_in_slider", ON_PLANK), ("place_in_drawer", IN_DRAWER)):
        placed = BASE.block("red", touches=dest)
        cases += [
            Case(task, held, placed, True, "released on the destination"),
            Case(task, held, placed.block("red", touches=dest + HELD), False, "robot still holds it"),
            Case(task, held, placed.block("red", touches=ON_TABLE), False, "released elsewhere"),
            Case(task, held.block("red", touches=HELD + ("blue",)), placed, False, "held block touched another"),
            Case(task, replace(held, robot_touches=("table:base_link",)), placed, False, "robot touched two bodies"),
            Case(task, BASE, placed, False, "nothing was held"),
            Case(task, replace(BASE, robot_touches=("table:base_link",)), placed, False, "robot held the table"),
        ]
    return cases


def _push_into_drawer_cases() -> list[Case]:
    start = BASE.block("blue", touches=ON_TABLE)
    end = start.block("blue", pos=(0.23, -0.1, 0.36), touches=IN_DRAWER)
    task = "push_into_drawer"
    return [
        Case(task, start, end, True, "blue fell into the drawer"),
        Case(task, start, end.block("blue", touches=IN_DRAWER + HELD), True,
             "CALVIN's robot test compares an int with (uid, link) pairs, so it never fails"),
        Case(task, start.block("blue", touches=ON_TABLE + HELD), end, False, "robot touched it at the start"),
        Case(task, start.block("blue", touches=ON_TABLE + ("red",)), end, False, "two contacts at the start"),
        Case(task, start.block("blue", touches=ON_PLANK), end, False, "started in the slider"),
        Case(task, start, end.block("blue", touches=ON_TABLE), False, "did not reach the drawer"),
    ]


def _stack_cases() -> list[Case]:
    held = BASE.block("red", pos=(0.23, -0.12, 0.55), touches=HELD)
    stacked = BASE.block("red", pos=(0.23, -0.12, 0.50), touches=("blue",))
    task = "stack_block"
    return [
        Case(task, held, stacked, True, "resting on blue only"),
        Case(task, held, stacked.block("red", lin_vel=(0.0, 0.0, -0.99), ang_vel=(0.5, -0.9, 0.0)), True, "slow"),
        Case(task, held, stacked.block("red", lin_vel=(0.0, 0.0, -1.0)), False, "|v| = 1 is not below 1"),
        Case(task, held, stacked.block("red", ang_vel=(-1.5, 0.0, 0.0)), False, "negative fast spin"),
        Case(task, held, stacked.block("red", touches=("blue",) + HELD), False, "robot still holds it"),
        Case(task, held, stacked.block("red", touches=("blue", "table:base_link")), False, "leans on the table"),
        Case(task, held.block("red", touches=HELD + ("blue",)), stacked, False, "already touched a block"),
    ]


def _unstack_cases() -> list[Case]:
    stacked = BASE.block("red", pos=(0.23, -0.12, 0.50), touches=("blue",))
    lifted = BASE.block("red", pos=(0.23, -0.12, 0.58), touches=HELD)
    task = "unstack_block"
    return [
        Case(task, stacked, lifted, True, "lifted off blue"),
        Case(task, stacked, lifted.block("red", touches=ON_TABLE), True, "put on the table"),
        Case(task, stacked, lifted.block("red", touches=("blue",) + HELD), False, "still on blue"),
        Case(task, stacked.block("red", lin_vel=(0.0, -1.2, 0.0)), lifted, False, "moving fast at the start"),
        Case(task, stacked.block("red", touches=("blue",) + HELD), lifted, False,
             "robot touched it at the start: not blocks only"),
    ]


def _light_cases() -> list[Case]:
    on, off = {"lightbulb": 1}, {"lightbulb": 0}
    led_on, led_off = {"led": 1}, {"led": 0}
    return [
        Case("turn_on_lightbulb", replace(BASE, **off), replace(BASE, **on), True, "0 -> 1"),
        Case("turn_on_lightbulb", replace(BASE, **on), replace(BASE, **on), False, "already on"),
        Case("turn_on_lightbulb", replace(BASE, **off), replace(BASE, led=1), False, "the led is not the bulb"),
        Case("turn_off_lightbulb", replace(BASE, **on), replace(BASE, **off), True, "1 -> 0"),
        Case("turn_off_lightbulb", replace(BASE, **off), replace(BASE, **off), False, "already off"),
        Case("turn_on_led", replace(BASE, **led_off), replace(BASE, **led_on), True, "0 -> 1"),
        Case("turn_on_led", replace(BASE, **led_on), replace(BASE, **led_on), False, "already on"),
        Case("turn_off_led", replace(BASE, **led_on), replace(BASE, **led_off), True, "1 -> 0"),
        Case("turn_off_led", replace(BASE, **led_on), replace(BASE, lightbulb=1, led=1), False, "bulb, not led"),
    ]


CASES: list[Case] = [
    *(c for color in COLORS for c in _rotate_cases(color)),
    *(c for color in COLORS for c in _push_cases(color)),
    *_joint_cases(),
    *(c for color in COLORS for c in _lift_cases(color)),
    *_place_cases(),
    *_push_into_drawer_cases(),
    *_stack_cases(),
    *_unstack_cases(),
    *_light_cases(),
]


def test_every_task_has_a_success_and_a_near_miss():
    assert {c.task for c in CASES if c.expected} == set(TASK_NAMES)
    assert {c.task for c in CASES if not c.expected} == set(TASK_NAMES)


@pytest.mark.parametrize("case", CASES, ids=[f"{c.task}:{c.label}" for c in CASES])
def test_case(case: Case):
    start, end = case.start.info(), case.end.info()
    assert ORACLE.is_completed(case.task, start, end) is case.expected
    assert (case.task in ORACLE.completed(start, end)) is case.expected


@pytest.mark.parametrize("case", [c for c in CASES if c.task.startswith(("lift", "place", "push_into"))][:12])
def test_table_links_are_read_by_name(case: Case):
    start, end = replace(case.start, links=SHUFFLED_LINKS), replace(case.end, links=SHUFFLED_LINKS)
    assert ORACLE.is_completed(case.task, start.info(), end.info()) is case.expected


def test_uids_come_from_the_info():
    uids = {"robot": 0, "plane": 1, "red": 2, "blue": 3, "pink": 4, "table": 5}  # the built-in scene's
    start = BASE.block("red", touches=ON_TABLE)
    end = _moved(start, "red", dz=0.06, touches=HELD)
    assert ORACLE.is_completed("lift_red_block_table", replace(start, uids=uids).info(), replace(end, uids=uids).info())
    # the same change with the robot's uid swapped for the plane's is not a lift any more
    end_info = end.info()
    end_info["robot_info"]["uid"] = 99
    start_info = start.info()
    start_info["robot_info"]["uid"] = 99
    assert not ORACLE.is_completed("lift_red_block_table", start_info, end_info)


def test_no_change_completes_nothing():
    info = BASE.info()
    assert ORACLE.completed(info, info) == set()


def test_several_tasks_at_once_and_filter():
    start = BASE
    end = replace(BASE, drawer=0.2, led=1)
    assert ORACLE.completed(start.info(), end.info()) == {"open_drawer", "turn_on_led"}
    assert ORACLE.completed(start.info(), end.info(), tasks=["turn_on_led", "close_drawer"]) == {"turn_on_led"}
    assert TaskOracle(tasks=["open_drawer"]).completed(start.info(), end.info()) == {"open_drawer"}


def test_info_views_are_accepted():
    start, end = BASE.info(), replace(BASE, slide=0.2).info()
    view = InfoView(start)
    assert ORACLE.is_completed("move_slider_left", view, end)
    assert ORACLE.completed(view, InfoView(end)) == {"move_slider_left"}


def test_fast_path_agrees_with_full_check():
    for case in CASES[::3]:
        start, end = case.start.info(), case.end.info()
        full = ORACLE.completed(start, end)
        assert {t for t in TASK_NAMES if ORACLE.is_completed(t, start, end)} == full


def test_unknown_task_names_raise():
    info = BASE.info()
    with pytest.raises(ValueError, match="unknown task 'open_the_drawer'.*open_drawer"):
        ORACLE.is_completed("open_the_drawer", info, info)
    with pytest.raises(ValueError, match="unknown task"):
        ORACLE.completed(info, info, tasks=["open_drawer", "fly"])
    with pytest.raises(ValueError, match="unknown task"):
        TaskOracle(tasks=["fly"])


def test_malformed_info_raises():
    info = BASE.info()
    broken = BASE.info()
    del broken["scene_info"]["doors"]["base__drawer"]
    with pytest.raises(ValueError, match="scene_info/doors/base__drawer"):
        ORACLE.is_completed("open_drawer", info, broken)
    broken = BASE.info()
    del broken["robot_info"]["uid"]
    with pytest.raises(ValueError, match="robot_info/uid"):
        ORACLE.completed(broken, info)
    with pytest.raises(ValueError, match="get_info"):
        ORACLE.completed(info, None)
