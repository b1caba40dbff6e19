"""Waypoint following through CALVIN's relative actions.

calvin_env adds each relative action (pos * 0.02 m, euler * 0.05 rad) to an internal target pose and
drives the arm there by IK. The expert keeps the same target (it starts at the observed TCP pose, where
the env's target sits when the arm is at rest) and steers it toward a waypoint at a bounded speed, so
every action it emits lies in [-1, 1] and a recorded dataset's `rel_actions` replay exactly. The
absolute `actions` of that dataset are the target pose after each step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.sim.layout import REL_ORN_SCALE, REL_POS_SCALE
from harness.spatial import euler_to_quat, wrap_angle

OPEN, CLOSE = 1, -1
GRIPPER_SETTLE_STEPS = 8  # closing to 0.001 m takes 5 steps in free air (docs/GEOMETRY.md#physics)


def down(yaw: float) -> np.ndarray:
    """Euler angles of the gripper pointing straight down, its fingers opening along (sin yaw, -cos yaw, 0)."""
    return np.array([np.pi, 0.0, yaw])


def rotation_angle(euler_a: np.ndarray, euler_b: np.ndarray) -> float:
    """The angle (rad) of the rotation between two orientations."""
    dot = abs(float(np.dot(euler_to_quat(euler_a), euler_to_quat(euler_b))))
    return 2.0 * float(np.arccos(min(1.0, dot)))


@dataclass
class Waypoint:
    """Move the TCP to `pos` with orientation `euler` (see `down`) and gripper `gripper`.

    Reached when the observed TCP is within `tol` of `pos`, the orientation within `angle_tol`, and the
    gripper has had time to settle. `speed` scales the maximum step (1 = 0.02 m per step). A waypoint
    that takes more than `max_steps` is given up; the skill sees `timed_out`.
    """

    pos: np.ndarray
    euler: np.ndarray
    gripper: int
    tol: float = 0.01
    angle_tol: float = 0.1
    speed: float = 1.0
    max_steps: int = 40
    min_steps: int = 0  # e.g. keep pushing for a while even when the TCP is already there
    steps: int = 0
    timed_out: bool = False


class TargetController:
    """Keeps the env's target pose estimate and turns waypoints into relative actions."""

    def __init__(self) -> None:
        self.pos: np.ndarray | None = None
        self.euler: np.ndarray | None = None
        self.gripper = OPEN
        self.gripper_changed_at = -GRIPPER_SETTLE_STEPS
        self.t = 0

    def reset(self) -> None:
        self.pos = None
        self.euler = None

    def sync(self, robot_obs: np.ndarray) -> None:
        """Start tracking from the observed pose (the env's target sits there when the arm rests)."""
        if self.pos is None:
            self.pos = robot_obs[:3].copy()
            self.euler = robot_obs[3:6].copy()
            self.gripper = OPEN if robot_obs[14] > 0 else CLOSE

    def reached(self, wp: Waypoint, robot_obs: np.ndarray) -> bool:
        if wp.steps >= wp.max_steps:
            wp.timed_out = True
            return True
        if wp.steps < wp.min_steps or wp.gripper != self.gripper:
            return False
        settled = self.t - self.gripper_changed_at >= GRIPPER_SETTLE_STEPS
        close = np.linalg.norm(robot_obs[:3] - wp.pos) <= wp.tol
        aligned = rotation_angle(robot_obs[3:6], wp.euler) <= wp.angle_tol
        return bool(settled and close and aligned)

    def action(self, wp: Waypoint) -> np.ndarray:
        """One relative action toward the waypoint; updates the target estimate as the env will."""
        wp.steps += 1
        self.t += 1
        max_step = REL_POS_SCALE * wp.speed
        delta = wp.pos - self.pos
        dist = np.linalg.norm(delta)
        if dist > max_step:
            delta *= max_step / dist
        turn = np.clip(wrap_angle(wp.euler - self.euler), -REL_ORN_SCALE * wp.speed, REL_ORN_SCALE * wp.speed)
        rel = np.empty(7)
        rel[:3] = np.clip(delta / REL_POS_SCALE, -1.0, 1.0)
        rel[3:6] = np.clip(turn / REL_ORN_SCALE, -1.0, 1.0)
        if wp.gripper != self.gripper:
            self.gripper = wp.gripper
            self.gripper_changed_at = self.t
        rel[6] = self.gripper
        self.pos = self.pos + rel[:3] * REL_POS_SCALE
        self.euler = self.euler + rel[3:6] * REL_ORN_SCALE
        return rel

    def hold(self) -> np.ndarray:
        self.t += 1
        return np.array([0.0, 0, 0, 0, 0, 0, self.gripper])
