"""A read-only view of calvin_env's `env.get_info()` dict (layout in docs/ARCHITECTURE.md "Environment").

The oracle and the symbolic view both read contacts, uids and joint states out of the same nested
dict; this module does the reading once per info and turns a missing key into a ValueError that
names the path. Nothing here hard-codes a uid: the robot, table and block uids come from the info.
Contacts are PyBullet contact tuples of the body in question: c[2] is the other body's uid and
c[4] that body's link index.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Mapping

BLOCK_NAMES = ("block_red", "block_blue", "block_pink")


def block_name(color: str) -> str:
    """calvin_env's movable-object name of a block colour ("red" -> "block_red")."""
    return f"block_{color}"


def _lookup(info: Any, path: tuple[str, ...]) -> Any:
    node = info
    for key in path:
        try:
            node = node[key]
        except (KeyError, TypeError, IndexError):
            raise ValueError(f"info is missing {'/'.join(path)} (expected calvin_env's get_info() layout)") from None
    return node


def contact_uids(contacts: Any) -> frozenset[int]:
    """The uids of the bodies in a list of PyBullet contact tuples."""
    return frozenset(int(c[2]) for c in contacts)


def contact_pairs(contacts: Any) -> frozenset[tuple[int, int]]:
    """(uid, link index) of the other body of each contact."""
    return frozenset((int(c[2]), int(c[4])) for c in contacts)


@dataclass(frozen=True)
class BlockInfo:
    name: str
    uid: int
    pos: tuple[float, float, float]
    orn: tuple[float, float, float, float]  # xyzw
    contact_uids: frozenset[int]
    contact_pairs: frozenset[tuple[int, int]]
    _raw: Mapping[str, Any] = field(compare=False, repr=False)

    @cached_property
    def max_abs_velocity(self) -> float:
        """The largest |component| of the linear and angular velocity (stack/unstack require < 1)."""
        lin = _lookup(self._raw, ("current_lin_vel",))
        ang = _lookup(self._raw, ("current_ang_vel",))
        return max(abs(float(v)) for v in (*lin, *ang))


class InfoView:
    """Parses the parts of one info dict that are asked for, once each."""

    def __init__(self, info: Mapping[str, Any]) -> None:
        if not isinstance(info, Mapping):
            raise ValueError(f"info must be a dict in calvin_env's get_info() layout, got {type(info).__name__}")
        self.raw = info
        self._blocks: dict[str, BlockInfo] = {}

    @cached_property
    def robot_uid(self) -> int:
        return int(_lookup(self.raw, ("robot_info", "uid")))

    @cached_property
    def robot_contact_uids(self) -> frozenset[int]:
        return contact_uids(_lookup(self.raw, ("robot_info", "contacts")))

    @cached_property
    def _table(self) -> Mapping[str, Any]:
        return _lookup(self.raw, ("scene_info", "fixed_objects", "table"))

    @cached_property
    def table_uid(self) -> int:
        return int(_lookup(self._table, ("uid",)))

    def table_link(self, link: str) -> tuple[int, int]:
        """(table uid, link index) of a table link by name (base_link, plank_link, drawer_link, ...)."""
        links = _lookup(self._table, ("links",))
        if link not in links:
            raise ValueError(f"info's table has no link {link!r}: it has {', '.join(links)}")
        return self.table_uid, int(links[link])

    @cached_property
    def _movable(self) -> Mapping[str, Any]:
        return _lookup(self.raw, ("scene_info", "movable_objects"))

    @cached_property
    def movable_names(self) -> tuple[str, ...]:
        return tuple(self._movable)

    @cached_property
    def movable_uids(self) -> frozenset[int]:
        return frozenset(int(_lookup(obj, ("uid",))) for obj in self._movable.values())

    @cached_property
    def name_of_uid(self) -> dict[int, list[str]]:
        """uid -> the movable objects with it (a list, so that a duplicate uid can be told apart)."""
        names: dict[int, list[str]] = {}
        for name in self._movable:
            names.setdefault(self.block(name).uid, []).append(name)
        return names

    def block(self, name: str) -> BlockInfo:
        cached = self._blocks.get(name)
        if cached is None:
            if name not in self._movable:
                raise ValueError(f"info has no movable object {name!r}: it has {', '.join(self._movable)}")
            cached = self._blocks[name] = self._parse_block(name, self._movable[name])
        return cached

    @staticmethod
    def _parse_block(name: str, raw: Mapping[str, Any]) -> BlockInfo:
        contacts = _lookup(raw, ("contacts",))
        pos = tuple(float(v) for v in _lookup(raw, ("current_pos",)))
        orn = tuple(float(v) for v in _lookup(raw, ("current_orn",)))
        if len(pos) != 3 or len(orn) != 4:
            raise ValueError(f"info's {name} needs current_pos (3,) and current_orn xyzw (4,)")
        return BlockInfo(name, int(_lookup(raw, ("uid",))), pos, orn, contact_uids(contacts), contact_pairs(contacts), raw)

    def door(self, joint: str) -> float:
        """Joint value of base__slide / base__drawer."""
        return float(_lookup(self.raw, ("scene_info", "doors", joint, "current_state")))

    def light(self, light: str) -> int:
        """logical_state (0/1) of "lightbulb" / "led"."""
        return int(_lookup(self.raw, ("scene_info", "lights", light, "logical_state")))
