"""The Franka Panda of calvin_env's `panda_longer_finger` config: control, IK and robot_obs.

Control follows calvin_env (docs/CALVIN.md#actions, docs/GEOMETRY.md#physics): a relative action adds
pos * 0.02 m and euler * 0.05 rad to an internal *target* pose; an absolute action replaces it. Once per
env step PyBullet's damped-least-squares IK (null-space rest pose = the neutral joints) solves for the
target, the result is clipped to the IK band, and position motors (force 200, max velocity 2 rad/s) drive
the arm. The gripper is a position motor per finger (open: 0.04 with force 2, close: 0 with force 200,
max velocity 1) plus a gear constraint that keeps the fingers symmetric.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pybullet as p
import pybullet_data

from harness.sim.layout import (
    ARM_JOINT_LIMITS,
    IK_JOINT_LIMITS,
    NEUTRAL_JOINTS,
    REL_ORN_SCALE,
    REL_POS_SCALE,
    ROBOT_BASE_POS,
)

ASSETS_DIR = Path(__file__).parent / "assets"
ARM_JOINTS = tuple(range(7))
# Link indices as in calvin_env's panda_longer_finger (docs/FIDELITY.md#2-robot)
FINGER_JOINTS = (9, 11)  # left, right (prismatic, 0..0.04 each)
TCP_LINK = 15
ARM_FORCE = 200.0
ARM_MAX_VELOCITY = 2.0
GRIPPER_MAX_VELOCITY = 1.0
GRIPPER_OPEN = (0.04, 2.0)  # (target per finger, force)
GRIPPER_CLOSE = (0.0, 200.0)


def robot_urdf_path() -> Path:
    """The robot URDF with its mesh paths resolved, written once per content to the temp dir.

    The packaged URDF names its meshes `pybullet_data://...` and `assets://...` because PyBullet resolves
    mesh files only relative to the URDF's own folder, and the Panda's arm meshes live in the installed
    pybullet_data.
    """
    text = (ASSETS_DIR / "panda_calvin.urdf").read_text()
    text = text.replace("pybullet_data://", pybullet_data.getDataPath().rstrip("/") + "/")
    text = text.replace("assets://", str(ASSETS_DIR) + "/")
    digest = hashlib.sha1(text.encode()).hexdigest()[:12]
    path = Path(tempfile.gettempdir()) / f"vla_harness_panda_{digest}.urdf"
    if not path.exists():
        # a temp file of this process's own (mkstemp), renamed atomically: concurrent processes never read a
        # half-written file, and never share a temp name (a seeded global RNG gives every process the same one)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem + ".", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # readable by every user of the shared temp dir, as a plain write leaves it
        Path(tmp).replace(path)
    return path


@dataclass
class TargetPose:
    pos: np.ndarray  # (3,) world
    euler: np.ndarray  # (3,) xyz, unwrapped: relative actions add to it componentwise


class PandaRobot:
    def __init__(self, client: int) -> None:
        self.cid = client
        self.uid = p.loadURDF(
            str(robot_urdf_path()), ROBOT_BASE_POS, (0, 0, 0, 1), useFixedBase=True,
            flags=p.URDF_USE_INERTIA_FROM_FILE,  # calvin_env's measured moments (layout.ROBOT_INERTIALS)
            physicsClientId=client,
        )
        self.gripper_action = 1
        self.target = TargetPose(np.zeros(3), np.zeros(3))
        self._ik_lower = [lo for lo, _ in ARM_JOINT_LIMITS] + [0.0, 0.0]
        self._ik_upper = [hi for _, hi in ARM_JOINT_LIMITS] + [0.04, 0.04]
        self._ik_ranges = [hi - lo for lo, hi in zip(self._ik_lower, self._ik_upper)]
        self._ik_clip_lo = np.array([lo for lo, _ in IK_JOINT_LIMITS])
        self._ik_clip_hi = np.array([hi for _, hi in IK_JOINT_LIMITS])
        gear = p.createConstraint(
            self.uid, FINGER_JOINTS[0], self.uid, FINGER_JOINTS[1], p.JOINT_GEAR, (1, 0, 0), (0, 0, 0), (0, 0, 0),
            physicsClientId=client,
        )
        p.changeConstraint(gear, gearRatio=-1, erp=0.1, maxForce=50, physicsClientId=client)
        self.reset(np.array(NEUTRAL_JOINTS), 0.08, 1)

    # ------------------------------------------------------------------ state

    def reset(self, arm_joints: np.ndarray, gripper_width: float, gripper_action: int = 1) -> None:
        """Set the joints exactly (velocities zero), hold them, and make the current TCP the target.

        calvin_env ignores robot_obs[14] here and keeps the last gripper action until the next step;
        restoring it instead makes a reset independent of what ran before (the first step sets it anyway).
        """
        self.gripper_action = 1 if gripper_action > 0 else -1
        for j, q in zip(ARM_JOINTS, arm_joints):
            p.resetJointState(self.uid, j, float(q), 0.0, physicsClientId=self.cid)
        for j in FINGER_JOINTS:
            p.resetJointState(self.uid, j, float(gripper_width) / 2, 0.0, physicsClientId=self.cid)
        self._command_arm(np.asarray(arm_joints, dtype=float))
        force = GRIPPER_OPEN[1] if self.gripper_action == 1 else GRIPPER_CLOSE[1]
        for j in FINGER_JOINTS:
            p.setJointMotorControl2(
                self.uid, j, p.POSITION_CONTROL, targetPosition=float(gripper_width) / 2, force=force,
                maxVelocity=GRIPPER_MAX_VELOCITY, physicsClientId=self.cid,
            )
        pos, orn = self.tcp_pose()
        self.target = TargetPose(pos.copy(), np.array(p.getEulerFromQuaternion(orn)))

    def tcp_pose(self) -> tuple[np.ndarray, tuple[float, float, float, float]]:
        state = p.getLinkState(self.uid, TCP_LINK, computeForwardKinematics=True, physicsClientId=self.cid)
        return np.array(state[4]), state[5]

    def arm_joint_states(self) -> np.ndarray:
        return np.array([s[0] for s in p.getJointStates(self.uid, ARM_JOINTS, physicsClientId=self.cid)])

    def gripper_width(self) -> float:
        return float(sum(s[0] for s in p.getJointStates(self.uid, FINGER_JOINTS, physicsClientId=self.cid)))

    def observation(self) -> np.ndarray:
        """robot_obs: TCP pos (3), TCP euler xyz (3), gripper width, 7 arm joints, last gripper action."""
        pos, orn = self.tcp_pose()
        obs = np.empty(15)
        obs[0:3] = pos
        obs[3:6] = p.getEulerFromQuaternion(orn)
        obs[6] = self.gripper_width()
        obs[7:14] = self.arm_joint_states()
        obs[14] = self.gripper_action
        return obs

    def info(self) -> dict:
        pos, orn = self.tcp_pose()
        return {
            "tcp_pos": tuple(pos),
            "tcp_orn": tuple(orn),
            "gripper_opening_width": self.gripper_width(),
            "arm_joint_states": tuple(self.arm_joint_states()),
            "gripper_action": self.gripper_action,
            "uid": self.uid,
            "contacts": p.getContactPoints(bodyA=self.uid, physicsClientId=self.cid),
        }

    # ------------------------------------------------------------------ control

    def apply_relative(self, action: np.ndarray) -> None:
        self.target.pos = self.target.pos + REL_POS_SCALE * action[:3]
        self.target.euler = self.target.euler + REL_ORN_SCALE * action[3:6]
        self._drive(self.target, int(action[6]))

    def apply_absolute(self, pos: np.ndarray, euler: np.ndarray, gripper: int) -> None:
        """The arm goes to the pose; the relative actions' target stays where it was, as in calvin_env (only its
        relative_to_absolute moves it), so a relative action after absolute ones adds to the target before them."""
        self._drive(TargetPose(np.array(pos, dtype=float), np.array(euler, dtype=float)), gripper)

    def _command_arm(self, q: np.ndarray) -> None:
        # joint by joint: setJointMotorControlArray has no max-velocity argument
        for j, qj in zip(ARM_JOINTS, q):
            p.setJointMotorControl2(
                self.uid, j, p.POSITION_CONTROL, targetPosition=float(qj), force=ARM_FORCE,
                maxVelocity=ARM_MAX_VELOCITY, physicsClientId=self.cid,
            )

    def _drive(self, pose: TargetPose, gripper: int) -> None:
        orn = p.getQuaternionFromEuler(pose.euler.tolist())
        rest = list(NEUTRAL_JOINTS) + [s[0] for s in p.getJointStates(self.uid, FINGER_JOINTS, physicsClientId=self.cid)]
        q = p.calculateInverseKinematics(
            self.uid, TCP_LINK, pose.pos.tolist(), orn, lowerLimits=self._ik_lower,
            upperLimits=self._ik_upper, jointRanges=self._ik_ranges, restPoses=rest, physicsClientId=self.cid,
        )
        self._command_arm(np.clip(np.asarray(q[:7]), self._ik_clip_lo, self._ik_clip_hi))
        self.gripper_action = gripper
        target, force = GRIPPER_OPEN if gripper == 1 else GRIPPER_CLOSE
        for j in FINGER_JOINTS:
            p.setJointMotorControl2(
                self.uid, j, p.POSITION_CONTROL, targetPosition=target, force=force,
                maxVelocity=GRIPPER_MAX_VELOCITY, physicsClientId=self.cid,
            )
