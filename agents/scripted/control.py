"""Waypoint following through CALVIN's relative actions.

calvin_env adds each relative action (pos * 0.02 m, euler * 0.05 rad) to an internal target pose and
drives the arm there by IK. The expert keeps the same target (it starts at the observed TCP pose, where
the env's target sits when the arm is at rest, at a chain's start, and carries it over to the chain's next
subtasks: `KEEP_TARGET_WITHIN`) and steers it toward a waypoint at a bounded speed, so
every action it emits lies in [-1, 1] and a recorded dataset's `rel_actions` replay exactly. The
absolute `actions` of that dataset are the target pose after each step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.sim.layout import IK_JOINT_LIMITS, REL_ORN_SCALE, REL_POS_SCALE
from harness.spatial import euler_to_quat, wrap_angle

OPEN, CLOSE = 1, -1
GRIPPER_SETTLE_STEPS = 8  # closing to 0.001 m takes 5 steps in free air (docs/GEOMETRY.md#physics)
# a subtask of the same chain starts where the env's target was left, 5-15 mm from the observed TCP (the arm lags
# it): the estimate is kept across reset() unless the observed pose is farther than this from it (an env reset
# by a caller that did not call new_chain, or an arm held back by what it pressed against)
KEEP_TARGET_WITHIN = (0.02, 0.15)  # m, rad
WRIST_LIMIT = IK_JOINT_LIMITS[6][1]  # joint 7, the wrist: the IK clips it to +-2.8973 rad
WRIST_MARGIN = 0.15  # rad kept from the limit when choosing which way to turn


def down(yaw: float) -> np.ndarray:
    """Euler angles of the gripper pointing straight down, its fingers opening along (sin yaw, -cos yaw, 0)."""
    return np.array([np.pi, 0.0, yaw])


def wrist_safe_turn(yaw_turn: float, wrist: float) -> float:
    """The yaw still to turn, the short way round unless that winds the wrist (joint 7, `wrist`) past its limit,
    then the long way. A hand pointing down turns its yaw opposite to the wrist joint: after a block was turned
    by 90 deg the short way back to a yaw could need the wrist 4 rad round, where it stops at its limit and the
    hand never gets there (the light switch left half turned)."""
    if abs(wrist - yaw_turn) <= WRIST_LIMIT - WRIST_MARGIN or yaw_turn == 0:
        return yaw_turn
    other = yaw_turn - np.sign(yaw_turn) * 2.0 * np.pi
    return other if abs(wrist - other) < abs(wrist - yaw_turn) else yaw_turn


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
        self._check = False  # the kept estimate is to be checked against the next observation (`reset`)

    def reset(self) -> None:
        """A new subtask: the estimate is checked against the next observation (`sync`) before it is kept."""
        self._check = True

    def sync(self, robot_obs: np.ndarray) -> None:
        """Start tracking from the observed pose (the env's target sits there when the arm rests), or, at a
        subtask's start, go on from the kept estimate if the observed pose is near it (KEEP_TARGET_WITHIN)."""
        if self.pos is not None and self._check:
            self._check = False
            far = np.linalg.norm(robot_obs[:3] - self.pos) > KEEP_TARGET_WITHIN[0]
            if far or rotation_angle(robot_obs[3:6], self.euler) > KEEP_TARGET_WITHIN[1]:
                self.pos = None
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

    def action(self, wp: Waypoint, robot_obs: np.ndarray | None = None) -> np.ndarray:
        """One relative action toward the waypoint; updates the target estimate as the env will. With
        `robot_obs`, the yaw turns the way the wrist joint can go (`wrist_safe_turn`)."""
        wp.steps += 1
        self.t += 1
        max_step = REL_POS_SCALE * wp.speed
        delta = wp.pos - self.pos
        dist = np.linalg.norm(delta)
        if dist > max_step:
            delta *= max_step / dist
        turn = wrap_angle(wp.euler - self.euler)
        if robot_obs is not None:
            turn[2] = wrist_safe_turn(float(turn[2]), float(robot_obs[13]))
        turn = np.clip(turn, -REL_ORN_SCALE * wp.speed, REL_ORN_SCALE * wp.speed)
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
