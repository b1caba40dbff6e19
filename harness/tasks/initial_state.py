"""CALVIN's `get_env_state_for_initial_condition`: a symbolic start condition -> (robot_obs, scene_obs).

docs/CALVIN.md#initial-states. The block yaws are random but fixed per condition: the legacy MT19937 RNG is
seeded with a 32-bit FNV-1 hash (offset basis 0, not FNV's standard one) of the UTF-16-LE bytes of
`str(condition.values())`, the condition's keys in STATE_KEYS order. A private RandomState with
that seed gives the same stream as CALVIN's `np.random.seed` inside `temp_seed`, without touching
the caller's global RNG.
"""

from __future__ import annotations

from math import pi
from typing import Any, Mapping

import numpy as np

from harness.sim.layout import EVAL_SLIDER_SLOTS, EVAL_TABLE_SLOTS, NEUTRAL_ROBOT_OBS, SCENES, get_layout
from harness.tasks.catalog import COLORS, STATE_KEYS
from harness.tasks.symbolic import SymbolicState, check_state

SLIDER_LEFT_Q = 0.28  # CALVIN writes 0.28 for "left" whatever the scene (D's door travel)
DRAWER_OPEN_Q = 0.22
SWITCH_ON_Q = 0.088
BLOCK_YAW_RANGE = (pi / 2 - pi / 8, pi / 2 + pi / 8)
PLACEABLE = ("table", "slider_left", "slider_right")  # where this construction can put a block
_FNV_PRIME = 0x01000193


def fnv1_32(data: bytes, start: int = 0) -> int:
    """32-bit FNV-1 (multiply, then xor) with the given offset basis; CALVIN's pyhash uses 0."""
    h = start
    for byte in data:
        h = ((h * _FNV_PRIME) & 0xFFFFFFFF) ^ byte
    return h


def check_condition(condition: Mapping[str, Any] | SymbolicState) -> dict[str, Any]:
    """Validate an initial condition; return it with plain values in STATE_KEYS order.

    Besides valid symbolic values, CALVIN's construction needs every block on the table or a slider
    slot, one or two blocks on the table (two table slots), at most one per slider slot, nothing grasped.
    """
    cond = dict(zip(STATE_KEYS, check_state(condition)))
    blocks = [cond[f"{c}_block"] for c in COLORS]
    for color, place in zip(COLORS, blocks):
        if place not in PLACEABLE:
            raise ValueError(f"initial condition {color}_block={place!r}: a start condition puts blocks in {PLACEABLE}")
    if cond["grasped"] != 0:
        raise ValueError("initial condition grasped=1: a start condition holds no block")
    if blocks.count("table") not in (1, 2):
        raise ValueError(f"initial condition has {blocks.count('table')} blocks on the table: expected 1 or 2")
    for slot in ("slider_left", "slider_right"):
        if blocks.count(slot) > 1:
            raise ValueError(f"initial condition puts {blocks.count(slot)} blocks in {slot}: at most 1 fits")
    return cond


def condition_seed(condition: Mapping[str, Any] | SymbolicState) -> int:
    """CALVIN's per-condition seed: FNV-1 32 (basis 0) of str(cond.values()) as UTF-16-LE."""
    text = str(check_condition(condition).values())  # "dict_values([1, 1, 'left', ...])"
    return fnv1_32(text.encode("utf-16-le"))


def _slider_slots(scene: str) -> dict[str, np.ndarray]:
    """The slider slots, defined for scene D (and valid in A).

    In B and C the bay sits 0.18 further right and D's slider_left point is inside the solid
    cabinet side (docs/GEOMETRY.md#evaluation-slots), so there the slots move with the bay. The benchmark never
    evaluates B or C, so this changes no published number.
    """
    shift = get_layout(scene).bay[0] - SCENES["D"].bay[0]
    return {name: np.array(pos) + (shift, 0.0, 0.0) for name, pos in EVAL_SLIDER_SLOTS.items()}


def _block_positions(cond: Mapping[str, Any], table_slots: list[np.ndarray], scene: str) -> dict[str, np.ndarray]:
    """CALVIN's rule: red takes table slot 0; blue slot 1 if red is on the table, else slot 0; pink slot 1."""
    sliders = _slider_slots(scene)
    table_slot = {"red": 0, "blue": 1 if cond["red_block"] == "table" else 0, "pink": 1}
    return {
        c: sliders[cond[f"{c}_block"]] if cond[f"{c}_block"] != "table" else table_slots[table_slot[c]]
        for c in COLORS
    }


def initial_state(condition: Mapping[str, Any] | SymbolicState, scene: str = "D") -> tuple[np.ndarray, np.ndarray]:
    """(robot_obs (15,), scene_obs (24,)) for an evaluation start condition, as CALVIN builds them.

    Blocks are written at their colour's place in the scene's scene_obs order (which differs in A-C).
    """
    cond = check_condition(condition)
    layout = get_layout(scene)
    rs = np.random.RandomState(condition_seed(cond))
    table_slots = [np.array(slot) for slot in EVAL_TABLE_SLOTS]
    rs.shuffle(table_slots)  # the first draw: which table slot is "slot 0"

    scene_obs = np.zeros(24)
    scene_obs[0] = SLIDER_LEFT_Q if cond["slider"] == "left" else 0.0
    scene_obs[1] = DRAWER_OPEN_Q if cond["drawer"] == "open" else 0.0
    scene_obs[3] = SWITCH_ON_Q if cond["lightbulb"] == 1 else 0.0
    scene_obs[4] = cond["lightbulb"]
    scene_obs[5] = cond["led"]
    positions = _block_positions(cond, table_slots, layout.name)
    for color in COLORS:  # one yaw draw per block, in the order red, blue, pink
        yaw = rs.uniform(*BLOCK_YAW_RANGE)
        scene_obs[layout.block_obs_slice(color)] = [*positions[color], 0.0, 0.0, yaw]
    return NEUTRAL_ROBOT_OBS.copy(), scene_obs
