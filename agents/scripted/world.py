"""What the scripted expert knows: the observation's state vectors plus the scene's measured geometry.

Everything is computed from `robot_obs`, `scene_obs` and `harness.sim.layout` (docs/GEOMETRY.md), never
from simulator internals, so the expert runs unchanged on any backend with CALVIN's contract.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.sim.layout import (
    BLOCK_COLORS,
    BLOCK_EXTENTS,
    BLOCK_REST_Z,
    SLOPE_AXIS,
    SLOPE_NORMAL,
    TABLE_TOP_Z,
    SceneLayout,
)

DRAWER_HANDLE_Y = -0.2495  # middle of the handle bar (y -0.262 .. -0.237) with the drawer closed
DRAWER_HANDLE_Z = 0.360
DOOR_ORIGIN = (0.075, 0.5353)  # (y, z) of the sliding door's frame on the sloped face
SWITCH_ORIGIN = (0.0609, 0.4949)  # (y, z) of the switch's frame at q = 0
BUTTON_TOP_Z = 0.484


@dataclass(frozen=True)
class Block:
    color: str
    pos: np.ndarray  # (3,) centre
    euler: np.ndarray  # (3,)
    extents: tuple[float, float, float]  # full extents in the block's own frame

    @property
    def yaw(self) -> float:
        return float(self.euler[2])

    def footprint_half(self, direction: np.ndarray) -> float:
        """Half of the block's extent along a horizontal world direction (unit vector)."""
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        local_x, local_y = np.array([c, s]), np.array([-s, c])
        return 0.5 * (self.extents[0] * abs(direction[:2] @ local_x) + self.extents[1] * abs(direction[:2] @ local_y))

    def is_tilted(self, limit: float = 0.35) -> bool:
        return abs(float(self.euler[0])) > limit or abs(float(self.euler[1])) > limit


class World:
    """A read-only view of one observation through the scene's geometry."""

    def __init__(self, layout: SceneLayout) -> None:
        self.layout = layout
        self.robot_obs = np.zeros(15)
        self.scene_obs = np.zeros(24)

    def update(self, obs: dict) -> None:
        robot, scene = np.asarray(obs["robot_obs"], float), np.asarray(obs["scene_obs"], float)
        if robot.shape != (15,) or scene.shape != (24,):
            raise ValueError(f"the scripted expert needs robot_obs (15,) and scene_obs (24,), got {robot.shape} and {scene.shape}")
        self.robot_obs, self.scene_obs = robot, scene

    # ------------------------------------------------------------------ robot

    @property
    def tcp(self) -> np.ndarray:
        return self.robot_obs[:3]

    @property
    def tcp_euler(self) -> np.ndarray:
        return self.robot_obs[3:6]

    @property
    def gripper_width(self) -> float:
        return float(self.robot_obs[6])

    # ------------------------------------------------------------------ furniture

    @property
    def door_q(self) -> float:
        return float(self.scene_obs[0])

    @property
    def drawer_q(self) -> float:
        return float(self.scene_obs[1])

    @property
    def switch_q(self) -> float:
        return float(self.scene_obs[3])

    @property
    def bulb_on(self) -> bool:
        return self.scene_obs[4] > 0.5

    @property
    def led_on(self) -> bool:
        return self.scene_obs[5] > 0.5

    def drawer_handle(self) -> np.ndarray:
        """Middle of the drawer's handle bar."""
        return np.array([self.layout.drawer_x, DRAWER_HANDLE_Y - self.drawer_q, DRAWER_HANDLE_Z])

    def drawer_inside(self) -> np.ndarray:
        """Middle of the part of the drawer's floor that sticks out in front of the table (at the height
        of a block resting on it): what can be reached from above when it is open only part way."""
        front_wall = -0.156 - self.drawer_q  # the inside of the front panel
        table_edge = -0.18
        return np.array([self.layout.drawer_x, 0.5 * (front_wall + table_edge), BLOCK_REST_Z["drawer"]])

    def door_point(self, u: float, s: float, n: float) -> np.ndarray:
        """A point of the sliding door in its slope frame (u along x from the door's origin)."""
        origin = np.array([self.layout.door_origin_x - self.door_q + u, *DOOR_ORIGIN])
        return origin + s * SLOPE_AXIS + n * SLOPE_NORMAL

    def switch_point(self, u: float, s: float, n: float) -> np.ndarray:
        origin = np.array([self.layout.switch_x, *SWITCH_ORIGIN]) + self.switch_q * SLOPE_AXIS
        return origin + np.array([u, 0.0, 0.0]) + s * SLOPE_AXIS + n * SLOPE_NORMAL

    def button_top(self) -> np.ndarray:
        return np.array([self.layout.button_x, -0.12, BUTTON_TOP_Z - float(self.scene_obs[2])])

    # ------------------------------------------------------------------ blocks

    def block(self, color: str) -> Block:
        sl = self.layout.block_obs_slice(color)
        pose = self.scene_obs[sl]
        return Block(color, pose[:3].copy(), pose[3:6].copy(), BLOCK_EXTENTS[self.layout.block_sizes[color]])

    def blocks(self) -> list[Block]:
        return [self.block(c) for c in BLOCK_COLORS]

    def held_block(self) -> Block | None:
        """The block between the closed fingers, if any (the one nearest the TCP, within 3 cm)."""
        if self.robot_obs[14] > 0 or self.gripper_width < 0.01:
            return None
        nearest = min(self.blocks(), key=lambda b: float(np.linalg.norm(b.pos - self.tcp)))
        return nearest if np.linalg.norm(nearest.pos - self.tcp) < 0.03 else None

    def on_table(self, block: Block) -> bool:
        """Resting on the table top in front of the cabinet (the plank behind it is 1 mm higher)."""
        on_top = abs(block.pos[2] - BLOCK_REST_Z["table"]) < 0.01
        return on_top and -0.18 < block.pos[1] < 0.02 and abs(block.pos[0]) < 0.44

    def table_surface_z(self) -> float:
        return TABLE_TOP_Z
