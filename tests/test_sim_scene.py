"""The built-in scene's geometry against the measured facts (docs/GEOMETRY.md)."""

from __future__ import annotations

import numpy as np
import pybullet as p
import pytest

from harness.sim.layout import (
    NEUTRAL_JOINTS,
    NEUTRAL_TCP_POS,
    NEUTRAL_TCP_QUAT,
    ROBOT_BASE_POS,
    ROBOT_INERTIALS,
    TABLE_LINKS,
)
from harness.sim.robot import FINGER_JOINTS, TCP_LINK, PandaRobot, robot_urdf_path
from harness.sim.urdf_builder import ASSETS_DIR, floor_obj, generate_assets

# calvin_env's panda_longer_finger, link by link (its conf: gripper_joint_ids [9, 11], tcp_link_id 15)
CALVIN_ROBOT_LINKS = (
    "panda_link1", "panda_link2", "panda_link3", "panda_link4", "panda_link5", "panda_link6", "panda_link7",
    "panda_link8", "panda_hand", "panda_leftfinger", "finger_left_tip", "panda_rightfinger", "finger_right_tip",
    "panda_grasptarget", "gripper_cam", "tcp",
)

# Tight collision boxes at q = 0 from docs/GEOMETRY.md#link-boxes: (min, max) per scene and link.
FACT_BOXES = {
    "A": {"drawer_link": ((-0.121, -0.261, 0.299), (0.321, 0.061, 0.401)), "button_link": ((-0.312, -0.152, 0.460), (-0.248, -0.088, 0.484)),
          "led_link": ((-0.360, 0.140, 0.648), (-0.200, 0.180, 0.664)), "light_link": ((0.272, 0.132, 0.648), (0.328, 0.188, 0.698)),
          "plank_link": ((-0.360, 0.020, 0.420), (0.160, 0.160, 0.440))},
    "B": {"drawer_link": ((-0.041, -0.261, 0.299), (0.401, 0.061, 0.401)), "button_link": ((0.248, -0.152, 0.460), (0.312, -0.088, 0.484)),
          "led_link": ((0.200, 0.140, 0.648), (0.360, 0.180, 0.664)), "light_link": ((-0.348, 0.132, 0.648), (-0.292, 0.188, 0.698)),
          "plank_link": ((-0.180, 0.020, 0.420), (0.340, 0.160, 0.440))},
    "C": {"drawer_link": ((-0.121, -0.261, 0.299), (0.321, 0.061, 0.401)), "button_link": ((-0.152, -0.152, 0.460), (-0.088, -0.088, 0.484)),
          "led_link": ((-0.200, 0.140, 0.648), (-0.040, 0.180, 0.664)), "light_link": ((-0.348, 0.132, 0.648), (-0.292, 0.188, 0.698)),
          "plank_link": ((-0.180, 0.020, 0.420), (0.340, 0.160, 0.440))},
    "D": {"drawer_link": ((-0.041, -0.261, 0.299), (0.401, 0.061, 0.401)), "button_link": ((-0.152, -0.152, 0.460), (-0.088, -0.088, 0.484)),
          "led_link": ((-0.200, 0.140, 0.648), (-0.040, 0.180, 0.664)), "light_link": ((0.272, 0.132, 0.648), (0.328, 0.188, 0.698)),
          "plank_link": ((-0.360, 0.020, 0.420), (0.160, 0.160, 0.440))},
}


@pytest.fixture()
def client():
    cid = p.connect(p.DIRECT)
    yield cid
    p.disconnect(cid)


def test_packaged_assets_are_what_the_builder_generates():
    for rel, content in generate_assets().items():
        path = ASSETS_DIR / rel
        assert path.is_file(), f"{rel} missing: run python -m harness.sim.urdf_builder"
        assert path.read_bytes() == content, f"{rel} is stale: run python -m harness.sim.urdf_builder"


@pytest.mark.parametrize("scene", sorted(FACT_BOXES))
def test_table_links_match_the_measured_boxes(client, scene):
    table = p.loadURDF(str(ASSETS_DIR / f"table_{scene}.urdf"), useFixedBase=True, physicsClientId=client)
    names = [p.getJointInfo(table, j, physicsClientId=client)[12].decode() for j in range(p.getNumJoints(table, physicsClientId=client))]
    assert {n: i for i, n in enumerate(names)} == {k: v for k, v in TABLE_LINKS.items() if v >= 0}
    for link, (lo, hi) in FACT_BOXES[scene].items():
        aabb_lo, aabb_hi = (np.array(v) for v in p.getAABB(table, TABLE_LINKS[link], physicsClientId=client))
        # getAABB adds the collision margin around the tight box (the simulator's own does the same, by 1-4 mm)
        assert np.all(aabb_lo <= np.array(lo) + 1e-4) and np.all(aabb_lo >= np.array(lo) - 0.005), (link, aabb_lo, lo)
        slack = 0.006 if link == "plank_link" else 0.005  # the plank's top is 1 mm higher: blocks rest at 0.461
        assert np.all(aabb_hi >= np.array(hi) - 1e-4) and np.all(aabb_hi <= np.array(hi) + slack), (link, aabb_hi, hi)


def test_robot_tcp_at_neutral_is_calvins(client):
    robot = p.loadURDF(str(robot_urdf_path()), ROBOT_BASE_POS, useFixedBase=True, physicsClientId=client)
    for j, q in enumerate(NEUTRAL_JOINTS):
        p.resetJointState(robot, j, q, physicsClientId=client)
    for j in FINGER_JOINTS:
        p.resetJointState(robot, j, 0.04, physicsClientId=client)
    state = p.getLinkState(robot, TCP_LINK, computeForwardKinematics=True, physicsClientId=client)
    assert np.linalg.norm(np.array(state[4]) - NEUTRAL_TCP_POS) < 0.001
    assert abs(abs(np.dot(state[5], NEUTRAL_TCP_QUAT)) - 1) < 1e-4
    # inner faces of the fingertip pads are 0.082 apart when open (docs/GEOMETRY.md#robot)
    left = p.getAABB(robot, FINGER_JOINTS[0] + 1, physicsClientId=client)
    right = p.getAABB(robot, FINGER_JOINTS[1] + 1, physicsClientId=client)
    gap = np.linalg.norm(np.array(left[0])[:2] - np.array(right[1])[:2])
    assert 0.07 < gap < 0.1


def test_robot_links_and_inertials_are_calvins(client):
    robot = PandaRobot(client)
    names = tuple(p.getJointInfo(robot.uid, j, physicsClientId=client)[12].decode() for j in range(p.getNumJoints(robot.uid, physicsClientId=client)))
    assert names == CALVIN_ROBOT_LINKS
    assert FINGER_JOINTS == (9, 11) and TCP_LINK == 15
    for j, name in enumerate(names):
        mass, _, inertia, com = p.getDynamicsInfo(robot.uid, j, physicsClientId=client)[:4]
        want = ROBOT_INERTIALS[name]
        assert mass == pytest.approx(want.mass), name
        assert np.allclose(com, want.com, atol=1e-9), name  # up to 12 cm from the link origin (link 5)
        assert np.allclose(inertia, want.inertia, rtol=1e-4, atol=1e-12), name


def _outer_face(client: int, robot: int, z: float) -> float:
    """How far from the TCP (along the opening direction) a ray from outside first meets the left finger,
    at height z along the approach axis (TCP frame)."""
    state = p.getLinkState(robot, TCP_LINK, computeForwardKinematics=True, physicsClientId=client)
    pos, rot = np.array(state[4]), np.array(p.getMatrixFromQuaternion(state[5])).reshape(3, 3)
    start, end = pos + rot @ np.array([0.0, 0.2, z]), pos + rot @ np.array([0.0, 0.0, z])
    hit = p.rayTest(start, end, physicsClientId=client)[0]
    assert hit[0] == robot and hit[1] == FINGER_JOINTS[0], hit
    return 0.2 * (1.0 - hit[2])


def test_fingers_taper_like_calvins(client):
    """panda_longer_finger's slim fingers: open, the outer face is 67 mm from the TCP at the root (just
    below the hand) and 45-54 mm over the last 15 mm (docs/FIDELITY.md#2-robot); a box finger would be
    67 mm all along."""
    robot = PandaRobot(client)
    robot.reset(np.array(NEUTRAL_JOINTS), 0.08)
    assert 0.063 < _outer_face(client, robot.uid, -0.072) < 0.068
    for z in (0.0, 0.005, 0.010):
        assert 0.045 <= _outer_face(client, robot.uid, z) <= 0.054


def test_floor_checker_phase_is_calvins():
    """calvin_env's floor has a dark (222) square where x and y both start at a whole metre."""
    def square_centres(obj: str) -> set[tuple[float, float]]:
        verts = np.array([line.split()[1:3] for line in obj.splitlines() if line.startswith("v ")], dtype=float)
        return {tuple(np.round(q.mean(axis=0), 3)) for q in verts.reshape(-1, 4, 2)}

    dark, light = square_centres(floor_obj(1)), square_centres(floor_obj(0))
    assert {(0.25, 0.25), (0.75, 0.75), (-0.75, -0.75)} <= dark
    assert {(0.75, 0.25), (0.25, 0.75), (-0.25, 0.25)} <= light
