"""The project's TaskOracle against calvin_env's own task checker (its `Tasks` with
conf/tasks/new_playtable_tasks.yaml) on transitions produced in the real calvin_env.

  * every step of the scripted expert solving chains that cover all 34 tasks: both checkers must give
    the same set of completed tasks (all 34 checked) at every step, so each task's first success step
    and every step before it (the near misses on the way) agree;
  * states placed on either side of each threshold (push 9/11 cm, rotate 55/65 deg, slider, drawer,
    lift, lights, drawer and stack placements): both agree, and the target task comes out as expected.

tests/test_tasks_oracle.py holds the synthetic-info cases; these are the real env's infos.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from agents import make_agent
from harness.envs import make_env
from harness.sim.layout import NEUTRAL_ROBOT_OBS
from harness.tasks import TASK_NAMES, TaskOracle, eval_instruction, initial_state, random_chain

pytestmark = pytest.mark.calvin_env
ORACLE = TaskOracle()
HOLD = np.array([0.0, 0, 0, 0, 0, 0, 1])
RED, BLUE, PINK = 6, 12, 18  # scene_obs offsets of the blocks in scene D
SLIDE, DRAWER, LIGHTBULB_SWITCH, LIGHTBULB, LED = 0, 1, 3, 4, 5


@pytest.fixture(scope="module")
def env():
    e = make_env("calvin", scene="D", cameras=())
    yield e
    e.close()


@pytest.fixture(scope="module")
def calvin_tasks():
    """calvin_env's Tasks, built from its own config the way its evaluation builds it."""
    import hydra
    from omegaconf import OmegaConf

    from harness.envs.calvin import _import_calvin_env, calvin_conf_dir

    conf = OmegaConf.load(calvin_conf_dir(_import_calvin_env()) / "tasks" / "new_playtable_tasks.yaml")
    return hydra.utils.instantiate(conf)


def candidate_chains(count: int = 2000) -> list[tuple[dict[str, Any], tuple[str, ...]]]:
    rng = np.random.default_rng(0)
    return [random_chain(rng) for _ in range(count)]


def test_oracle_agrees_with_calvin_env_at_every_step_of_the_expert(env, calvin_tasks):
    """Chains are picked greedily, each for the most tasks not yet completed, and cut after the last of
    them, until both checkers have seen every task completed (a subtask the expert fails ends its
    chain, as in the evaluation)."""
    expert = make_agent("scripted")
    expert.bind_env(env.description)
    pool, left, disagreements, chains = candidate_chains(), set(TASK_NAMES), [], 0
    while left and chains < 20:
        condition, tasks = pool.pop(max(range(len(pool)), key=lambda i: len(left & set(pool[i][1]))))
        tasks, chains = tasks[: max(i for i, t in enumerate(tasks) if t in left) + 1], chains + 1
        obs = env.reset(*initial_state(condition, "D"))
        expert.new_chain(0)
        for task in tasks:
            expert.reset()
            start = env.get_info()
            for step in range(360):
                obs, _, _, info = env.step(expert.step(obs, eval_instruction(task)))
                ours, theirs = ORACLE.completed(start, info), calvin_tasks.get_task_info(start, info)
                if ours != theirs:
                    disagreements.append((task, step, sorted(ours ^ theirs)))
                left -= ours & theirs
                if task in theirs:
                    break
            else:
                break
    assert disagreements == []
    assert left == set(), f"no transition completed these tasks in {chains} chains"


def _placed(scene_obs: np.ndarray, **changes: Any) -> np.ndarray:
    """scene_obs with some entries changed: `red=(dx, dy, dz)` moves a block, `red_yaw=deg` turns it,
    `at={index: value}` sets entries."""
    out = scene_obs.copy()
    for name, offset in (("red", RED), ("blue", BLUE), ("pink", PINK)):
        if name in changes:
            out[offset: offset + 3] += changes[name]
        if f"{name}_yaw" in changes:
            out[offset + 5] += np.radians(changes[f"{name}_yaw"])
        if f"{name}_pos" in changes:
            out[offset: offset + 3] = changes[f"{name}_pos"]
    for index, value in changes.get("at", {}).items():
        out[index] = value
    return out


BASE = {"led": 0, "lightbulb": 0, "slider": "right", "drawer": "open", "red_block": "table",
        "blue_block": "table", "pink_block": "slider_left", "grasped": 0}
_, BASE_SCENE = initial_state(BASE, "D")
IN_DRAWER = (0.18, -0.28, 0.37)  # scene D's open drawer: the part of its floor in front of the table
RED_TOP = BASE_SCENE[BLUE: BLUE + 3] + (0, 0, 0.045)  # resting on the blue block

# (task, end state, whether the task holds): each pair of cases straddles the task's threshold.
CASES = [
    ("push_red_block_right", _placed(BASE_SCENE, red=(0.11, 0, 0)), True),
    ("push_red_block_right", _placed(BASE_SCENE, red=(0.09, 0, 0)), False),
    ("push_blue_block_left", _placed(BASE_SCENE, blue=(-0.11, 0, 0)), True),
    ("push_blue_block_left", _placed(BASE_SCENE, blue=(0.11, 0, 0)), False),
    ("rotate_red_block_right", _placed(BASE_SCENE, red_yaw=-65), True),
    ("rotate_red_block_right", _placed(BASE_SCENE, red_yaw=-55), False),
    ("rotate_blue_block_left", _placed(BASE_SCENE, blue_yaw=65), True),
    ("rotate_blue_block_left", _placed(BASE_SCENE, blue_yaw=-65), False),
    ("move_slider_left", _placed(BASE_SCENE, at={SLIDE: 0.16}), True),
    ("move_slider_left", _placed(BASE_SCENE, at={SLIDE: 0.14}), False),
    ("close_drawer", _placed(BASE_SCENE, at={DRAWER: 0.22 - 0.13}), True),
    ("close_drawer", _placed(BASE_SCENE, at={DRAWER: 0.22 - 0.11}), False),
    ("turn_on_lightbulb", _placed(BASE_SCENE, at={LIGHTBULB_SWITCH: 0.088, LIGHTBULB: 1}), True),
    ("turn_on_led", _placed(BASE_SCENE, at={LED: 1}), True),
    ("turn_on_led", BASE_SCENE, False),
    ("lift_red_block_table", _placed(BASE_SCENE, red=(0, 0, 0.08)), False),  # in the air, but nobody holds it
    ("push_into_drawer", _placed(BASE_SCENE, red_pos=IN_DRAWER), True),
    ("push_into_drawer", _placed(BASE_SCENE, red=(0, 0.05, 0)), False),
    ("stack_block", _placed(BASE_SCENE, red_pos=RED_TOP), True),
    ("stack_block", _placed(BASE_SCENE, red=(0.03, 0, 0)), False),
]


def _info_after(env, scene_obs: np.ndarray) -> dict[str, Any]:
    env.reset(NEUTRAL_ROBOT_OBS, scene_obs)
    for _ in range(3):  # let placed blocks settle into their contacts
        info = env.step(HOLD)[3]
    return info


@pytest.fixture(scope="module")
def start_info(env):
    return _info_after(env, BASE_SCENE)


@pytest.mark.parametrize("task, end_scene, expected", CASES, ids=[f"{c[0]}-{c[2]}" for c in CASES])
def test_oracle_agrees_with_calvin_env_on_placed_states(env, calvin_tasks, start_info, task, end_scene, expected):
    end = _info_after(env, end_scene)
    assert ORACLE.completed(start_info, end) == calvin_tasks.get_task_info(start_info, end)
    assert (task in ORACLE.completed(start_info, end)) is expected
