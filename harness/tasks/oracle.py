"""The 34-task success oracle: which tasks a change from the subtask's start info to the current info completes.

Predicates and thresholds are CALVIN's (docs/CALVIN.md#task-thresholds, `conf/tasks/new_playtable_tasks.yaml` with
calvin_env's `Tasks`). All comparisons are strict where CALVIN's are. Contacts are compared by body
uid unless the predicate names a table link, in which case (uid, link) pairs are compared.

One quirk is kept on purpose. Its definition words push_into_drawer as "robot never in its
start|end contacts", but calvin_env's code tests `robot_uid not in start | end` where those sets
hold (uid, link) pairs, so that test never fails. The predicate that really runs is: the block's
start contacts are exactly {(table, base_link)} (which rules the robot out at the start) and its end
contacts include (table, drawer_link), whether or not the robot still touches it. We reproduce what
runs, because matching CALVIN's success counts is the point.
"""

from __future__ import annotations

from functools import partial
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping

from harness.spatial import relative_rotation_euler
from harness.tasks.catalog import COLORS, TASK_NAMES, check_task_names, task_index
from harness.tasks.info import InfoView, block_name

# Thresholds (new_playtable_tasks.yaml / Tasks defaults).
ROTATE_Z_DEG = 60.0  # |z| must exceed this ...
ROTATE_Z_MAX_DEG = 180.0  # ... and stay below this
ROTATE_XY_MAX_DEG = 30.0  # |x| and |y| of the relative rotation must stay below this
ROTATE_MAX_MOVE = 0.1  # the block may move at most this far (m) while being rotated
PUSH_DX = 0.1  # m along world x
SLIDER_DQ = 0.15  # base__slide joint change
DRAWER_DQ = 0.12  # base__drawer joint change
LIFT_DZ = {"table": 0.05, "slider": 0.03, "drawer": 0.05}
LIFT_SURFACE_LINK = {"table": "base_link", "slider": "plank_link", "drawer": "drawer_link"}
STACK_MAX_VEL = 1.0  # every |component| of lin and ang velocity must be below this

InfoLike = Mapping[str, Any] | InfoView


class _Change:
    """The start and end views of one check, with the relative block rotations cached between tasks."""

    def __init__(self, start: InfoLike, end: InfoLike) -> None:
        self.start = start if isinstance(start, InfoView) else InfoView(start)
        self.end = end if isinstance(end, InfoView) else InfoView(end)
        self._rotation: dict[str, tuple[float, float, float]] = {}

    def rotation_deg(self, name: str) -> tuple[float, float, float]:
        """Euler xyz (deg) of end * start^-1 for a block; computed for all blocks in one batch."""
        if not self._rotation:
            names = self.start.movable_names
            starts = [self.start.block(n).orn for n in names]
            ends = [self.end.block(n).orn for n in names]
            eulers = relative_rotation_euler(starts, ends, degrees=True).tolist()
            self._rotation = {n: tuple(e) for n, e in zip(names, eulers)}
        return self._rotation[name]

    def displacement(self, name: str) -> tuple[float, float, float]:
        a, b = self.start.block(name).pos, self.end.block(name).pos
        return (b[0] - a[0], b[1] - a[1], b[2] - a[2])


Predicate = Callable[[_Change], bool]


def _rotate(name: str, sign: int, ch: _Change) -> bool:
    """sign -1: rotate right (clockwise seen from above, z < -60 deg); +1: left."""
    dx, dy, dz = ch.displacement(name)
    if (dx * dx + dy * dy + dz * dz) ** 0.5 > ROTATE_MAX_MOVE:
        return False
    if not ch.end.block(name).contact_uids - {ch.start.robot_uid}:
        return False  # held in the air by the robot does not count: it must rest on something
    x, y, z = ch.rotation_deg(name)
    turned = ROTATE_Z_DEG < sign * z < ROTATE_Z_MAX_DEG
    return turned and abs(x) < ROTATE_XY_MAX_DEG and abs(y) < ROTATE_XY_MAX_DEG


def _push(name: str, sign: int, ch: _Change) -> bool:
    """Pushed along world x by more than 0.1 m while staying on (at least) the surface it started on."""
    robot = ch.start.robot_uid
    start = {p for p in ch.start.block(name).contact_pairs if p[0] != robot}
    end = {p for p in ch.end.block(name).contact_pairs if p[0] != robot}
    if not start or not end or not start <= end:
        return False
    return sign * ch.displacement(name)[0] > PUSH_DX


def _move_joint(joint: str, threshold: float, ch: _Change) -> bool:
    delta = ch.end.door(joint) - ch.start.door(joint)
    return 0 < threshold < delta or 0 > threshold > delta


def _lift(name: str, surface: str, ch: _Change) -> bool:
    """Lifted off the named surface: only the robot touches it now, and it rose by the threshold."""
    start, end = ch.start.block(name), ch.end.block(name)
    if not end.pos[2] - start.pos[2] > LIFT_DZ[surface]:
        return False
    if end.contact_uids != {ch.start.robot_uid}:
        return False
    return ch.start.table_link(LIFT_SURFACE_LINK[surface]) in start.contact_pairs


def _place(link: str, ch: _Change) -> bool:
    """The block the robot alone held at the start now rests on the table link, released by the robot."""
    robot = ch.start.robot_uid
    held = ch.start.robot_contact_uids
    if len(held) != 1:
        return False
    (uid,) = held
    if uid in ch.end.robot_contact_uids:
        return False
    names = ch.start.name_of_uid.get(uid, [])
    if len(names) != 1:
        return False
    if ch.start.block(names[0]).contact_uids != {robot}:
        return False
    return ch.end.table_link(link) in ch.end.block(names[0]).contact_pairs


def _push_into_drawer(ch: _Change) -> bool:
    """Any block goes from lying on the table top alone to touching the drawer (see module doc)."""
    src = ch.start.table_link("base_link")
    dest = ch.end.table_link("drawer_link")
    for name in (block_name(c) for c in COLORS):
        if ch.start.block(name).contact_pairs == {src} and dest in ch.end.block(name).contact_pairs:
            return True
    return False


def _onto_blocks(before: InfoView, after: InfoView, blocks: frozenset[int]) -> bool:
    """Some block touched no block `before`, and `after` touches blocks only while at rest (|v| < 1).

    stack_block is this from start to end; unstack_block is the same test with start and end
    swapped (touching blocks only, at rest, at the start; touching no block at the end).
    """
    for name in before.movable_names:
        free, resting = before.block(name).contact_uids, after.block(name)
        if blocks & free or not resting.contact_uids or resting.contact_uids - blocks:
            continue
        if resting.max_abs_velocity < STACK_MAX_VEL:
            return True
    return False


def _stack(ch: _Change) -> bool:
    return _onto_blocks(ch.start, ch.end, ch.start.movable_uids)


def _unstack(ch: _Change) -> bool:
    return _onto_blocks(ch.end, ch.start, ch.start.movable_uids)


def _toggle(light: str, before: int, after: int, ch: _Change) -> bool:
    return ch.start.light(light) == before and ch.end.light(light) == after


def _build_predicates() -> Mapping[str, Predicate]:
    preds: dict[str, Predicate] = {}
    for color in COLORS:
        for side, sign in (("right", -1), ("left", 1)):
            preds[f"rotate_{color}_block_{side}"] = partial(_rotate, block_name(color), sign)
    for color in COLORS:
        for side, sign in (("right", 1), ("left", -1)):
            preds[f"push_{color}_block_{side}"] = partial(_push, block_name(color), sign)
    preds["move_slider_left"] = partial(_move_joint, "base__slide", SLIDER_DQ)
    preds["move_slider_right"] = partial(_move_joint, "base__slide", -SLIDER_DQ)
    preds["open_drawer"] = partial(_move_joint, "base__drawer", DRAWER_DQ)
    preds["close_drawer"] = partial(_move_joint, "base__drawer", -DRAWER_DQ)
    for color in COLORS:
        for surface in ("table", "slider", "drawer"):
            preds[f"lift_{color}_block_{surface}"] = partial(_lift, block_name(color), surface)
    preds["place_in_slider"] = partial(_place, "plank_link")
    preds["place_in_drawer"] = partial(_place, "drawer_link")
    preds["stack_block"] = _stack
    preds["unstack_block"] = _unstack
    preds["turn_on_lightbulb"] = partial(_toggle, "lightbulb", 0, 1)
    preds["turn_off_lightbulb"] = partial(_toggle, "lightbulb", 1, 0)
    preds["turn_on_led"] = partial(_toggle, "led", 0, 1)
    preds["turn_off_led"] = partial(_toggle, "led", 1, 0)
    preds["push_into_drawer"] = _push_into_drawer
    # in TASKS order, so that iteration order is CALVIN's
    return MappingProxyType({name: preds[name] for name in TASK_NAMES})


PREDICATES: Mapping[str, Predicate] = _build_predicates()


class TaskOracle:
    """CALVIN's task oracle over calvin_env-layout info dicts (either backend).

    `completed` checks many tasks (the 34 by default); `is_completed` is the fast path for the one
    subtask an evaluation checks per step. Both accept info dicts or prebuilt InfoViews (pass the
    start as an InfoView to parse it once per subtask).
    """

    def __init__(self, tasks: Iterable[str] | None = None) -> None:
        self.tasks: tuple[str, ...] = TASK_NAMES if tasks is None else check_task_names(tasks)

    def completed(self, start_info: InfoLike, info: InfoLike, tasks: Iterable[str] | None = None) -> set[str]:
        """The tasks (of `tasks`, else of this oracle's tasks) whose predicate holds from start_info to info."""
        names = self.tasks if tasks is None else check_task_names(tasks)
        change = _Change(start_info, info)
        return {name for name in names if PREDICATES[name](change)}

    def is_completed(self, task: str, start_info: InfoLike, info: InfoLike) -> bool:
        try:
            predicate = PREDICATES[task]
        except (KeyError, TypeError):
            task_index(task)  # raises the ValueError that names the valid tasks
            raise
        return predicate(_Change(start_info, info))
