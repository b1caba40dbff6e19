"""The symbolic scene state CALVIN's chain generator reasons over, and its state machine.

A state has the keys of catalog.STATE_KEYS (led, lightbulb, slider, drawer, red_block, blue_block,
pink_block, grasped). A task is valid in a state when exactly one of its transitions applies
(docs/CALVIN.md#symbolic-transitions); doing it replaces the effect's keys.

`symbolic_state(info, scene)` reads such a state off a calvin_env info dict, so that the chain logic
can be checked against a live scene (for example, that a recorded episode really did what its
chain says).
"""

from __future__ import annotations

import numbers
from dataclasses import astuple, dataclass, fields
from functools import lru_cache
from typing import Any, Iterable, Mapping

from harness.sim.layout import DRAWER_TRAVEL, TABLE_TOP_Z, SceneLayout, get_layout
from harness.tasks.catalog import (
    STATE_KEYS,
    STATE_VALUES,
    TASK_CATEGORY,
    TASK_NAMES,
    TASKS,
    check_task_names,
    task_index,
)
from harness.tasks.info import InfoView, block_name

StateTuple = tuple[Any, ...]  # values in STATE_KEYS order

# A touching block whose centre is this much lower (higher) is under (on top of) the block: half a
# block's height (all blocks are 0.04 tall), far above the mm-scale jitter of blocks side by side.
STACK_DZ = 0.02
_KEY_POS = {key: i for i, key in enumerate(STATE_KEYS)}


@dataclass(frozen=True)
class SymbolicState:
    led: int
    lightbulb: int
    slider: str  # "left" | "right"
    drawer: str  # "open" | "closed"
    red_block: str
    blue_block: str
    pink_block: str
    grasped: int

    def __post_init__(self) -> None:
        # validate, and store plain ints/strs even when numpy scalars came in
        for f, value in zip(fields(self), check_state(self.as_dict())):
            object.__setattr__(self, f.name, value)

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def as_tuple(self) -> StateTuple:
        return astuple(self)

    @classmethod
    def from_mapping(cls, state: Mapping[str, Any]) -> SymbolicState:
        return cls(*check_state(state))


def check_state(state: Mapping[str, Any] | SymbolicState) -> StateTuple:
    """Validate a symbolic state and return its values in STATE_KEYS order (numpy ints become ints)."""
    if isinstance(state, SymbolicState):
        return state.as_tuple()
    if not isinstance(state, Mapping):
        raise ValueError(f"a symbolic state must be a dict with keys {', '.join(STATE_KEYS)}, got {type(state).__name__}")
    extra = set(state) - set(STATE_KEYS)
    if extra:
        raise ValueError(f"unknown symbolic state key(s) {sorted(extra)}: expected {', '.join(STATE_KEYS)}")
    return tuple(_check_value(state, key) for key in STATE_KEYS)


def _check_value(state: Mapping[str, Any], key: str) -> Any:
    """The value as a plain int / str (numpy scalars are converted: str() of the state must match CALVIN's)."""
    if key not in state:
        raise ValueError(f"symbolic state is missing key {key!r} (expected keys {', '.join(STATE_KEYS)})")
    raw, allowed = state[key], STATE_VALUES[key]
    if isinstance(allowed[0], int) and isinstance(raw, numbers.Integral):
        value: Any = int(raw)
    elif isinstance(allowed[0], str) and isinstance(raw, str):
        value = str(raw)
    else:
        value = None  # wrong type: rejected below
    if value not in allowed:
        raise ValueError(f"symbolic state {key}={raw!r} is not one of {list(allowed)}")
    return value


# --- the state machine ---------------------------------------------------------------------------

_Compiled = tuple[tuple[tuple[tuple[int, frozenset[Any]], ...], tuple[tuple[int, Any], ...]], ...]


def _compile() -> tuple[_Compiled, ...]:
    """Each task's transitions over state tuples: ((key position, allowed values), ...) -> ((position, value), ...)."""
    return tuple(
        tuple(
            (
                tuple((_KEY_POS[k], frozenset(v)) for k, v in tr.condition.items()),
                tuple((_KEY_POS[k], v) for k, v in tr.effect.items()),
            )
            for tr in spec.transitions
        )
        for spec in TASKS
    )


_COMPILED = _compile()


@lru_cache(maxsize=None)
def next_state(state: StateTuple, task: int) -> StateTuple | None:
    """The state after task number `task` (TASK_NAMES index), or None unless exactly one transition applies.

    States are validated tuples (check_state); the cache makes the chain generator's millions of
    checks cheap, since only a few thousand (state, task) pairs ever occur.
    """
    found = None
    for condition, effect in _COMPILED[task]:
        if all(state[pos] in allowed for pos, allowed in condition):
            if found is not None:
                return None  # two alternatives apply: the task is ambiguous here, so not valid
            found = effect
    if found is None:
        return None
    new = list(state)
    for pos, value in found:
        new[pos] = value
    return tuple(new)


def chain_end(state: StateTuple, tasks: Iterable[int]) -> StateTuple | None:
    """Walk task indices from a state tuple; None as soon as one is not valid."""
    for task in tasks:
        state = next_state(state, task)
        if state is None:
            return None
    return state


def valid_tasks(state: Mapping[str, Any] | SymbolicState) -> list[str]:
    """The tasks (in TASKS order) with exactly one applicable transition in this state."""
    st = check_state(state)
    return [name for i, name in enumerate(TASK_NAMES) if next_state(st, i) is not None]


def apply_task(state: Mapping[str, Any] | SymbolicState, task: str) -> dict[str, Any]:
    """The state after doing `task`; ValueError when the task is not valid in this state."""
    after = next_state(check_state(state), task_index(task))
    if after is None:
        raise ValueError(f"task {task!r} is not valid in symbolic state {dict(zip(STATE_KEYS, check_state(state)))}")
    return dict(zip(STATE_KEYS, after))


def is_valid_chain(
    state: Mapping[str, Any] | SymbolicState, tasks: Iterable[str], distinct_categories: bool = True
) -> bool:
    """CALVIN's chain validity: each task valid in turn and (by default) no two tasks of one category."""
    names = check_task_names(tasks)
    if distinct_categories and len({TASK_CATEGORY[n] for n in names}) != len(names):
        return False
    return chain_end(check_state(state), [task_index(n) for n in names]) is not None


# --- reading a symbolic state off an info dict -----------------------------------------------------


def symbolic_state(info: Mapping[str, Any] | InfoView, scene: str | SceneLayout = "D") -> SymbolicState:
    """The symbolic state of a scene from calvin_env's get_info() dict.

    Joints: the drawer is open past half its travel, the sliding door is "left" past half of the
    scene's door travel. Blocks: see block_symbol.
    """
    view = info if isinstance(info, InfoView) else InfoView(info)
    layout = scene if isinstance(scene, SceneLayout) else get_layout(scene)
    blocks = {f"{c}_block": block_symbol(view, block_name(c), layout) for c in ("red", "blue", "pink")}
    return SymbolicState(
        led=view.light("led"),
        lightbulb=view.light("lightbulb"),
        slider="left" if view.door("base__slide") > layout.door_travel / 2 else "right",
        drawer="open" if view.door("base__drawer") > DRAWER_TRAVEL / 2 else "closed",
        **blocks,
        grasped=int("grasped" in blocks.values()),
    )


def block_symbol(view: InfoView, name: str, layout: SceneLayout) -> str:
    """One block's symbolic place, from its contacts first and its position as the fallback.

    In order: touching only the robot -> grasped; touching a block whose centre is >= 2 cm lower ->
    stacked_top, >= 2 cm higher -> stacked_bottom; touching the drawer link -> drawer; the plank ->
    slider_left/right by x against the bay centre; the table top -> table. A block touching none of
    these (in flight, leaning on the door) is placed by where it is (see place_by_position).
    """
    block = view.block(name)
    if block.contact_uids and block.contact_uids == {view.robot_uid}:
        return "grasped"
    touching = [view.block(n) for n in view.movable_names if n != name and view.block(n).uid in block.contact_uids]
    if any(block.pos[2] - other.pos[2] >= STACK_DZ for other in touching):
        return "stacked_top"
    if any(other.pos[2] - block.pos[2] >= STACK_DZ for other in touching):
        return "stacked_bottom"
    if view.table_link("drawer_link") in block.contact_pairs:
        return "drawer"
    if view.table_link("plank_link") in block.contact_pairs:
        return _slider_side(block.pos[0], layout)
    if view.table_link("base_link") in block.contact_pairs:
        return "table"
    return place_by_position(block.pos, layout)


def _slider_side(x: float, layout: SceneLayout) -> str:
    return "slider_left" if x < layout.bay_center_x else "slider_right"


def place_by_position(pos: tuple[float, float, float], layout: SceneLayout) -> str:
    """Below the table top over the drawer -> drawer; inside the cabinet bay -> slider; else table.

    The drawer's inside spans x = drawer_x +- 0.176 (docs/GEOMETRY.md#moving-links); the bay starts at the
    cabinet front (y 0.02). "table" is the catch-all, as the symbolic states know no other place.
    """
    x, y, z = pos
    if z < TABLE_TOP_Z and abs(x - layout.drawer_x) < 0.176:
        return "drawer"
    if y > 0.02 and z > TABLE_TOP_Z and layout.bay[0] <= x <= layout.bay[1]:
        return _slider_side(x, layout)
    return "table"
