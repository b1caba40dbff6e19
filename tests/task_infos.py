"""Synthetic calvin_env-layout info dicts for pure-logic tests of harness.tasks (oracle, symbolic view).

A `Scene` describes blocks, joints and lights at a level tests can read ("the red block touches the
table's base_link and the robot"); `Scene.info()` turns it into the nested dict `env.get_info()`
returns (docs/ARCHITECTURE.md "Environment"), with PyBullet-shaped contact tuples (c[2] = other
body's uid, c[4] = its link). Contacts are made symmetric: a block that touches the robot shows up
in the robot's contacts, and block-block contacts appear on both blocks.

The default uids and link numbers are deliberately NOT the built-in scene's (robot 0, table 5,
blocks 2-4), so a test passes only if the code reads them from the info.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from harness.sim.layout import TABLE_LINKS
from harness.spatial import euler_to_quat

COLORS = ("red", "blue", "pink")
DEFAULT_UIDS = {"robot": 7, "plane": 1, "table": 3, "red": 20, "blue": 21, "pink": 22}
SHUFFLED_LINKS = {  # table link numbers permuted, to catch hard-coded link ids
    "base_link": -1, "button_link": 4, "switch_link": 6, "slide_link": 0,
    "drawer_link": 5, "led_link": 1, "light_link": 2, "plank_link": 3,
}

ON_TABLE = ("table:base_link",)
ON_PLANK = ("table:plank_link",)
IN_DRAWER = ("table:drawer_link",)
HELD = ("robot",)


@dataclass(frozen=True)
class Block:
    pos: tuple[float, float, float] = (0.05, -0.12, 0.46)
    rpy_deg: tuple[float, float, float] = (0.0, 0.0, 90.0)  # extrinsic xyz euler, degrees
    touches: tuple[str, ...] = ON_TABLE  # "robot", "plane", "table:<link>", or a colour
    lin_vel: tuple[float, float, float] = (0.0, 0.0, 0.0)
    ang_vel: tuple[float, float, float] = (0.0, 0.0, 0.0)


def _contact(uid: int, link: int) -> tuple[Any, ...]:
    """A PyBullet getContactPoints row with bodyB = uid, linkIndexB = link (the rest is filler)."""
    return (0, -1, uid, -1, link, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0), (0.0, 0.0, 1.0), 0.0, 1.0, 0.0,
            (1.0, 0.0, 0.0), 0.0, (0.0, 1.0, 0.0))


@dataclass(frozen=True)
class Scene:
    red: Block = Block(pos=(0.05, -0.12, 0.46))
    blue: Block = Block(pos=(0.23, -0.12, 0.46))
    pink: Block = Block(pos=(-0.2409, 0.0924, 0.461), touches=ON_PLANK)
    slide: float = 0.0  # base__slide joint
    drawer: float = 0.0  # base__drawer joint
    lightbulb: int = 0
    led: int = 0
    robot_touches: tuple[str, ...] = ()  # robot contacts besides the blocks that list "robot"
    uids: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_UIDS))
    links: dict[str, int] = field(default_factory=lambda: dict(TABLE_LINKS))

    def block(self, color: str, **changes: Any) -> Scene:
        """A copy with one block changed, e.g. scene.block("red", pos=(...), touches=HELD)."""
        return replace(self, **{color: replace(getattr(self, color), **changes)})

    def _target(self, name: str) -> tuple[int, int]:
        if name.startswith("table:"):
            return self.uids["table"], self.links[name.split(":", 1)[1]]
        return self.uids[name], -1

    def _touch_lists(self) -> dict[str, list[str]]:
        lists = {c: list(getattr(self, c).touches) for c in COLORS}
        lists["robot"] = list(self.robot_touches)
        for c in COLORS:
            for other in getattr(self, c).touches:
                if other in lists and c not in lists[other]:
                    lists[other].append(c)  # make block-block and block-robot contacts symmetric
        return lists

    def info(self) -> dict[str, Any]:
        touches = self._touch_lists()
        movable = {
            f"block_{c}": {
                "current_pos": getattr(self, c).pos,
                "current_orn": tuple(euler_to_quat([v * 3.141592653589793 / 180 for v in getattr(self, c).rpy_deg])),
                "current_lin_vel": getattr(self, c).lin_vel,
                "current_ang_vel": getattr(self, c).ang_vel,
                "contacts": [_contact(*self._target(n)) for n in touches[c]],
                "uid": self.uids[c],
            }
            for c in COLORS
        }
        table = {"uid": self.uids["table"], "links": dict(self.links),
                 "contacts": []}
        return {
            "robot_info": {
                "tcp_pos": (0.02587, -0.23131, 0.57128), "tcp_orn": (0.73158, 0.68112, 0.02806, 0.00879),
                "gripper_opening_width": 0.08, "arm_joint_states": (0.0,) * 7, "gripper_action": 1,
                "uid": self.uids["robot"], "contacts": [_contact(*self._target(n)) for n in touches["robot"]],
            },
            "scene_info": {
                "fixed_objects": {"table": table},
                "movable_objects": movable,
                "doors": {"base__slide": {"current_state": self.slide}, "base__drawer": {"current_state": self.drawer}},
                "buttons": {"base__button": {"joint_state": 0.0, "logical_state": self.led}},
                "switches": {"base__switch": {"joint_state": 0.088 * self.lightbulb, "logical_state": self.lightbulb}},
                "lights": {"lightbulb": {"logical_state": self.lightbulb}, "led": {"logical_state": self.led}},
            },
        }
