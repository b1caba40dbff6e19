"""The 34 CALVIN tasks: names in CALVIN's TASKS order, categories, and symbolic transitions.

Source of truth: docs/CALVIN.md#symbolic-transitions. The order of TASK_NAMES is load-bearing: the evaluation chain
generator draws indices into this list, so reordering it changes every published chain.

A transition is `condition -> effect` over the symbolic state keys (STATE_KEYS). A condition maps a
key to the tuple of values it accepts (a one-element tuple for `key=value`, several for `a|b`).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping

COLORS = ("red", "blue", "pink")
STATE_KEYS = ("led", "lightbulb", "slider", "drawer", "red_block", "blue_block", "pink_block", "grasped")
BLOCK_VALUES = ("table", "slider_left", "slider_right", "drawer", "grasped", "stacked_top", "stacked_bottom")
STATE_VALUES: Mapping[str, tuple[Any, ...]] = MappingProxyType({
    "led": (0, 1),
    "lightbulb": (0, 1),
    "slider": ("right", "left"),
    "drawer": ("closed", "open"),
    "red_block": BLOCK_VALUES,
    "blue_block": BLOCK_VALUES,
    "pink_block": BLOCK_VALUES,
    "grasped": (0, 1),
})

CATEGORY_NAMES: Mapping[int, str] = MappingProxyType({
    1: "rotate_push",
    2: "slider",
    3: "drawer",
    4: "lift_table",
    5: "lift_slider",
    6: "lift_drawer",
    7: "place",
    8: "lights",
    9: "push_into_drawer",
    10: "stack",
    11: "unstack",
})


@dataclass(frozen=True)
class Transition:
    """One `condition -> effect` alternative of a task."""

    condition: Mapping[str, tuple[Any, ...]]
    effect: Mapping[str, Any]

    def applies(self, state: Mapping[str, Any]) -> bool:
        return all(state[key] in allowed for key, allowed in self.condition.items())


@dataclass(frozen=True)
class TaskSpec:
    index: int  # position in TASK_NAMES (what the chain generator draws)
    name: str
    category: int  # 1..11, see CATEGORY_NAMES
    transitions: tuple[Transition, ...]


def _tr(condition: dict[str, Any], effect: dict[str, Any]) -> Transition:
    """Build a transition; a condition value that is a str/int means exactly that value."""
    cond = {k: tuple(v) if isinstance(v, (tuple, list)) else (v,) for k, v in condition.items()}
    return Transition(MappingProxyType(cond), MappingProxyType(dict(effect)))


def _block_on_table(color: str) -> tuple[Transition, ...]:
    """rotate_* and push_*: the block stays on the table."""
    key = f"{color}_block"
    return (_tr({key: "table", "grasped": 0}, {key: "table"}),)


def _lift(color: str, surface: str) -> tuple[Transition, ...]:
    key = f"{color}_block"
    grab = {key: "grasped", "grasped": 1}
    if surface == "table":
        return (_tr({key: "table", "grasped": 0}, grab),)
    if surface == "slider":
        # a block in a slider slot is reachable only when the door covers the other slot
        return (
            _tr({key: "slider_left", "slider": "right", "grasped": 0}, grab),
            _tr({key: "slider_right", "slider": "left", "grasped": 0}, grab),
        )
    return (_tr({key: "drawer", "drawer": "open", "grasped": 0}, grab),)


def _place_in_slider() -> tuple[Transition, ...]:
    # the block lands in the slot that the door leaves open
    return tuple(
        _tr({f"{c}_block": "grasped", "slider": side, "grasped": 1}, {f"{c}_block": f"slider_{side}", "grasped": 0})
        for c in COLORS
        for side in ("right", "left")
    )


def _place_in_drawer() -> tuple[Transition, ...]:
    return tuple(
        _tr({f"{c}_block": "grasped", "drawer": "open", "grasped": 1}, {f"{c}_block": "drawer", "grasped": 0})
        for c in COLORS
    )


def _ordered_pairs() -> list[tuple[str, str]]:
    """(top, bottom) colour pairs in CALVIN's order: red/blue, red/pink, blue/red, blue/pink, pink/red, pink/blue."""
    return [(top, bottom) for top in COLORS for bottom in COLORS if top != bottom]


def _stack() -> tuple[Transition, ...]:
    return tuple(
        _tr(
            {f"{top}_block": "grasped", f"{bottom}_block": "table", "grasped": 1},
            {f"{top}_block": "stacked_top", f"{bottom}_block": "stacked_bottom", "grasped": 0},
        )
        for top, bottom in _ordered_pairs()
    )


def _unstack() -> tuple[Transition, ...]:
    return tuple(
        _tr(
            {f"{top}_block": "stacked_top", f"{bottom}_block": "stacked_bottom", "grasped": 0},
            {f"{top}_block": "table", f"{bottom}_block": "table"},
        )
        for top, bottom in _ordered_pairs()
    )


def _push_into_drawer() -> tuple[Transition, ...]:
    # the one block on the table goes into the open drawer while the other two sit in the slider
    on_slider = ("slider_right", "slider_left")
    transitions = []
    for color in COLORS:
        others = {f"{c}_block": on_slider for c in COLORS if c != color}
        cond = {f"{color}_block": "table", **others, "drawer": "open", "grasped": 0}
        transitions.append(_tr(cond, {f"{color}_block": "drawer", "grasped": 0}))
    return tuple(transitions)


def _toggle(key: str, to: int) -> tuple[Transition, ...]:
    return (_tr({key: 1 - to, "grasped": 0}, {key: to}),)


def _build() -> tuple[TaskSpec, ...]:
    entries: list[tuple[str, int, tuple[Transition, ...]]] = []
    for color in COLORS:
        for side in ("right", "left"):
            entries.append((f"rotate_{color}_block_{side}", 1, _block_on_table(color)))
    for color in COLORS:
        for side in ("right", "left"):
            entries.append((f"push_{color}_block_{side}", 1, _block_on_table(color)))
    entries += [
        ("move_slider_left", 2, (_tr({"slider": "right", "grasped": 0}, {"slider": "left"}),)),
        ("move_slider_right", 2, (_tr({"slider": "left", "grasped": 0}, {"slider": "right"}),)),
        ("open_drawer", 3, (_tr({"drawer": "closed", "grasped": 0}, {"drawer": "open"}),)),
        ("close_drawer", 3, (_tr({"drawer": "open", "grasped": 0}, {"drawer": "closed"}),)),
    ]
    for color in COLORS:
        entries.append((f"lift_{color}_block_table", 4, _lift(color, "table")))
        entries.append((f"lift_{color}_block_slider", 5, _lift(color, "slider")))
        entries.append((f"lift_{color}_block_drawer", 6, _lift(color, "drawer")))
    entries += [
        ("place_in_slider", 7, _place_in_slider()),
        ("place_in_drawer", 7, _place_in_drawer()),
        ("stack_block", 10, _stack()),
        ("unstack_block", 11, _unstack()),
        ("turn_on_lightbulb", 8, _toggle("lightbulb", 1)),
        ("turn_off_lightbulb", 8, _toggle("lightbulb", 0)),
        ("turn_on_led", 8, _toggle("led", 1)),
        ("turn_off_led", 8, _toggle("led", 0)),
        ("push_into_drawer", 9, _push_into_drawer()),
    ]
    return tuple(TaskSpec(i, name, cat, trs) for i, (name, cat, trs) in enumerate(entries))


TASKS: tuple[TaskSpec, ...] = _build()
TASK_NAMES: tuple[str, ...] = tuple(t.name for t in TASKS)
TASK_INDEX: Mapping[str, int] = MappingProxyType({t.name: t.index for t in TASKS})
TASK_CATEGORY: Mapping[str, int] = MappingProxyType({t.name: t.category for t in TASKS})


def task_spec(name: str) -> TaskSpec:
    """The spec of one task; ValueError names the valid tasks."""
    return TASKS[task_index(name)]


def task_index(name: str) -> int:
    try:
        return TASK_INDEX[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown task {name!r}: expected one of {', '.join(TASK_NAMES)}") from None


def check_task_names(names: Any) -> tuple[str, ...]:
    """Validate an iterable of task names (a bare string is one name, not its characters)."""
    if isinstance(names, str):
        names = (names,)
    names = tuple(names)
    for name in names:
        task_index(name)
    return names
