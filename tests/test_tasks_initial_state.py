"""CALVIN's initial-state construction (docs/CALVIN.md#initial-states)."""

from __future__ import annotations

from math import pi

import numpy as np
import pytest

from harness.sim.layout import EVAL_SLIDER_SLOTS, EVAL_TABLE_SLOTS, NEUTRAL_ROBOT_OBS, get_layout
from harness.tasks import condition_seed, fnv1_32, initial_conditions, initial_state

FIRST = {"led": 1, "lightbulb": 1, "slider": "left", "drawer": "open", "red_block": "slider_left",
         "blue_block": "table", "pink_block": "slider_right", "grasped": 0}
TABLE = {tuple(np.round(slot, 6)) for slot in EVAL_TABLE_SLOTS}


def _block(scene_obs: np.ndarray, color: str, scene: str = "D") -> np.ndarray:
    return scene_obs[get_layout(scene).block_obs_slice(color)]


def test_fnv1_check_value():
    assert fnv1_32("hello world".encode("utf-16-le")) == 3799943344
    assert fnv1_32(b"") == 0
    assert fnv1_32(b"a", start=0x811C9DC5) == 0x050C5D7E  # the standard FNV-1 test vector


def test_seed_hashes_calvins_string():
    text = "dict_values([1, 1, 'left', 'open', 'slider_left', 'table', 'slider_right', 0])"
    assert condition_seed(FIRST) == fnv1_32(text.encode("utf-16-le"))
    shuffled_keys = dict(reversed(list(FIRST.items())))
    assert condition_seed(shuffled_keys) == condition_seed(FIRST)
    assert condition_seed({**FIRST, "led": np.int64(1)}) == condition_seed(FIRST)


def test_first_condition_values():
    robot_obs, scene_obs = initial_state(FIRST)
    assert np.array_equal(robot_obs, NEUTRAL_ROBOT_OBS)
    assert np.allclose(scene_obs[:6], [0.28, 0.22, 0.0, 0.088, 1, 1])
    assert np.allclose(_block(scene_obs, "red")[:3], EVAL_SLIDER_SLOTS["slider_left"])
    assert np.allclose(_block(scene_obs, "pink")[:3], EVAL_SLIDER_SLOTS["slider_right"])
    # regression pin of the seeded draws (shuffle, then one yaw per block: red, blue, pink)
    assert np.allclose(_block(scene_obs, "blue")[:3], EVAL_TABLE_SLOTS[1])  # (0.23, -0.12, 0.46)
    assert np.allclose(scene_obs[[11, 17, 23]], [1.88594101, 1.48814344, 1.46839869])


def test_draw_order_is_shuffle_then_red_blue_pink():
    cond = {**FIRST, "red_block": "table", "blue_block": "table"}
    rs = np.random.RandomState(condition_seed(cond))
    order = [0, 1]
    rs.shuffle(order)
    yaws = [rs.uniform(pi / 2 - pi / 8, pi / 2 + pi / 8) for _ in range(3)]
    _, scene_obs = initial_state(cond)
    assert np.allclose(_block(scene_obs, "red")[:3], EVAL_TABLE_SLOTS[order[0]])
    assert np.allclose(_block(scene_obs, "blue")[:3], EVAL_TABLE_SLOTS[order[1]])
    assert np.allclose([_block(scene_obs, c)[5] for c in ("red", "blue", "pink")], yaws)


@pytest.mark.parametrize("cond", initial_conditions()[::7])
def test_placement_rules(cond):
    _, scene_obs = initial_state(cond)
    pos = {c: tuple(np.round(_block(scene_obs, c)[:3], 6)) for c in ("red", "blue", "pink")}
    for color, place in ((c, cond[f"{c}_block"]) for c in pos):
        if place == "table":
            assert pos[color] in TABLE
        else:
            assert np.allclose(pos[color], EVAL_SLIDER_SLOTS[place])
    assert len(set(pos.values())) == 3  # no two blocks share a slot
    on_table = [c for c in pos if cond[f"{c}_block"] == "table"]
    if "pink" in on_table and len(on_table) == 2:
        # pink takes slot 1 and the other table block slot 0
        other = next(c for c in on_table if c != "pink")
        assert pos[other] != pos["pink"]
    for c in pos:
        roll, pitch, yaw = _block(scene_obs, c)[3:]
        assert roll == 0 and pitch == 0 and pi / 2 - pi / 8 <= yaw <= pi / 2 + pi / 8
    assert scene_obs[0] == (0.28 if cond["slider"] == "left" else 0.0)
    assert scene_obs[1] == (0.22 if cond["drawer"] == "open" else 0.0)
    assert scene_obs[2] == 0.0
    assert scene_obs[3] == (0.088 if cond["lightbulb"] else 0.0)
    assert (scene_obs[4], scene_obs[5]) == (cond["lightbulb"], cond["led"])


def test_blue_takes_slot_0_when_red_is_not_on_the_table():
    cond = {**FIRST, "red_block": "slider_right", "blue_block": "table", "pink_block": "table"}
    rs = np.random.RandomState(condition_seed(cond))
    order = [0, 1]
    rs.shuffle(order)
    _, scene_obs = initial_state(cond)
    assert np.allclose(_block(scene_obs, "blue")[:3], EVAL_TABLE_SLOTS[order[0]])
    assert np.allclose(_block(scene_obs, "pink")[:3], EVAL_TABLE_SLOTS[order[1]])


def test_deterministic_and_leaves_global_rng_alone():
    np.random.seed(5)
    expected = np.random.RandomState(5).random_sample()
    a = initial_state(FIRST)
    b = initial_state(FIRST)
    assert np.random.random_sample() == expected
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    a[0][0] = 99.0
    assert NEUTRAL_ROBOT_OBS[0] != 99.0  # robot_obs is a copy


def test_scene_a_orders_blocks_pink_blue_red():
    _, d = initial_state(FIRST, "D")
    _, a = initial_state(FIRST, "A")
    assert np.array_equal(a[:6], d[:6])
    assert np.array_equal(a[6:12], d[18:24]) and np.array_equal(a[12:18], d[12:18]) and np.array_equal(a[18:24], d[6:12])


def test_scene_b_slider_slots_follow_the_bay():
    _, b = initial_state(FIRST, "B")
    assert np.allclose(_block(b, "red", "B")[:3], np.add(EVAL_SLIDER_SLOTS["slider_left"], (0.18, 0, 0)))
    assert np.allclose(_block(b, "pink", "B")[:3], np.add(EVAL_SLIDER_SLOTS["slider_right"], (0.18, 0, 0)))


@pytest.mark.parametrize("bad, message", [
    ({k: v for k, v in FIRST.items() if k != "slider"}, "missing key 'slider'"),
    ({**FIRST, "drawer": "ajar"}, "drawer='ajar'"),
    ({**FIRST, "red_block": "drawer"}, "red_block='drawer'"),
    ({**FIRST, "pink_block": "slider_left"}, "2 blocks in slider_left"),
    ({**FIRST, "red_block": "table", "pink_block": "table"}, "3 blocks on the table"),
    ({**FIRST, "grasped": 1}, "grasped=1"),
])
def test_bad_conditions_raise(bad, message):
    with pytest.raises(ValueError, match=message):
        initial_state(bad)


def test_bad_scene_raises():
    with pytest.raises(ValueError, match="unknown scene"):
        initial_state(FIRST, scene="E")
