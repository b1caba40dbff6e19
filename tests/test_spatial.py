"""harness.spatial against PyBullet itself (DIRECT client, no GUI)."""

from __future__ import annotations

import numpy as np
import pybullet as p
import pytest

from harness import spatial as sp

RNG = np.random.default_rng(1234)


@pytest.fixture(scope="module")
def client():
    cid = p.connect(p.DIRECT)
    yield cid
    p.disconnect(cid)


def _random_eulers(n: int) -> np.ndarray:
    """Eulers away from gimbal lock (|pitch| < 80 deg), where the decomposition is unique."""
    e = RNG.uniform(-np.pi, np.pi, size=(n, 3))
    e[:, 1] = RNG.uniform(-1.4, 1.4, size=n)
    return e


def _same_rotation(q1, q2, atol: float = 1e-6) -> bool:
    """q and -q are the same rotation (PyBullet sometimes returns the other sign)."""
    return np.allclose(q1, q2, atol=atol) or np.allclose(q1, -np.asarray(q2), atol=atol)


def test_euler_quat_match_pybullet(client):
    for e in _random_eulers(50):
        q_pb = np.array(p.getQuaternionFromEuler(e.tolist()))
        assert np.allclose(sp.euler_to_quat(e), q_pb, atol=1e-7)
        assert np.allclose(sp.quat_to_euler(q_pb), p.getEulerFromQuaternion(q_pb.tolist()), atol=1e-7)
        assert np.allclose(sp.quat_to_euler(3.0 * q_pb), e, atol=1e-7)  # unnormalised input


def test_batched_shapes():
    e = _random_eulers(12).reshape(3, 4, 3)
    assert sp.euler_to_quat(e).shape == (3, 4, 4)
    assert np.allclose(sp.quat_to_euler(sp.euler_to_quat(e)), e, atol=1e-9)
    assert sp.euler_to_matrix(e).shape == (3, 4, 3, 3)


def test_quat_multiply_and_inverse_match_pybullet(client):
    for a, b in zip(_random_eulers(20), _random_eulers(20)):
        qa, qb = p.getQuaternionFromEuler(a.tolist()), p.getQuaternionFromEuler(b.tolist())
        _, q_pb = p.multiplyTransforms([0, 0, 0], qa, [0, 0, 0], qb)
        assert _same_rotation(sp.quat_multiply(qa, qb), q_pb)
        _, inv_pb = p.invertTransform([0, 0, 0], qa)
        assert _same_rotation(sp.quat_inverse(qa), inv_pb)
        assert not _same_rotation(sp.quat_multiply(qb, qa), q_pb)  # order matters
    assert np.allclose(sp.quat_multiply([0, 0, 0, 1], [0.1, 0.2, 0.3, 0.9]), [0.1, 0.2, 0.3, 0.9])


def test_axis_angle_to_quat_matches_pybullet(client):
    for axis, angle in zip(RNG.normal(size=(20, 3)), RNG.uniform(-3, 3, size=20)):
        axis = axis / np.linalg.norm(axis)
        assert _same_rotation(sp.axis_angle_to_quat(axis * angle), p.getQuaternionFromAxisAngle(axis.tolist(), angle))
    assert np.allclose(sp.axis_angle_to_quat(np.zeros(3)), [0, 0, 0, 1])  # the identity, no division by zero
    assert sp.axis_angle_to_quat(np.zeros((4, 2, 3))).shape == (4, 2, 4)


def test_matrices_match_pybullet(client):
    for e in _random_eulers(20):
        q = p.getQuaternionFromEuler(e.tolist())
        m_pb = np.array(p.getMatrixFromQuaternion(q)).reshape(3, 3)
        assert np.allclose(sp.quat_to_matrix(q), m_pb, atol=1e-7)
        assert np.allclose(sp.matrix_to_euler(m_pb), e, atol=1e-7)
        q_back = sp.matrix_to_quat(m_pb)
        assert np.allclose(q_back, np.array(q) * np.sign(q[3]), atol=1e-7)


def test_matrix_to_quat_handles_half_turns():
    for axis in np.eye(3):
        q = np.append(axis, 0.0)  # 180 deg about each axis: w = 0, the hard case for the trace formula
        assert np.allclose(np.abs(sp.matrix_to_quat(sp.quat_to_matrix(q))), np.abs(q), atol=1e-12)


def test_relative_rotation_euler():
    start = sp.euler_to_quat([0.0, 0.0, np.radians(80)])
    end = sp.euler_to_quat([0.0, 0.0, np.radians(10)])
    assert np.allclose(sp.relative_rotation_euler(start, end, degrees=True), [0, 0, -70], atol=1e-9)
    # a tilted block: the world-frame relative rotation is still a pure yaw when the tilt is undone
    tilt = sp.euler_to_quat([0.3, 0.0, 0.0])
    yaw = sp.euler_to_quat([0.0, 0.0, 1.0])
    assert np.allclose(sp.relative_rotation_euler(tilt, sp.quat_multiply(yaw, tilt)), [0, 0, 1.0], atol=1e-9)


def test_quat_to_rotvec_matches_pybullet_axis_angle(client):
    for e in _random_eulers(20):
        q = p.getQuaternionFromEuler(e.tolist())
        axis, angle = p.getAxisAngleFromQuaternion(q)
        rotvec = np.asarray(axis) * angle
        if angle > np.pi:  # PyBullet's angle runs to 2 pi; the rotation vector's to pi
            rotvec = -np.asarray(axis) * (2 * np.pi - angle)
        assert np.allclose(sp.quat_to_rotvec(q), rotvec, atol=1e-6)
        assert np.allclose(sp.quat_to_rotvec(-np.asarray(q)), rotvec, atol=1e-6)  # -q: the same rotation
    assert np.allclose(sp.quat_to_rotvec([0, 0, 0, 1]), 0) and sp.quat_to_rotvec(np.zeros((2, 3, 4)) + [0, 0, 0, 1]).shape == (2, 3, 3)


def test_wrap_angle():
    assert np.allclose(sp.wrap_angle([np.pi + 0.1, -np.pi - 0.1, 0.5, 3 * np.pi]), [-np.pi + 0.1, np.pi - 0.1, 0.5, -np.pi])


def test_tcp_frame_points_match_pybullet(client):
    pos, euler = np.array([0.02587, -0.23131, 0.57128]), np.array([3.09046, -0.02908, 1.50014])
    q = p.getQuaternionFromEuler(euler.tolist())
    pts = RNG.normal(size=(5, 3)) * 0.1
    world = sp.tcp_to_world(pts, pos, euler)
    for local, w in zip(pts, world):
        assert np.allclose(p.multiplyTransforms(pos, q, local, [0, 0, 0, 1])[0], w, atol=1e-7)
    assert np.allclose(sp.world_to_tcp(world, pos, euler), pts, atol=1e-12)
    # docs/GEOMETRY.md#robot: at the neutral pose the TCP z axis (approach) points down
    assert np.allclose(sp.tcp_to_world([[0, 0, 1]], pos, euler) - pos, [[0.053, 0.025, -0.998]], atol=2e-3)


def test_tcp_delta_to_world():
    euler = np.array([3.09046, -0.02908, 1.50014])
    rot = sp.euler_to_matrix(euler)
    d = np.array([0.01, -0.02, 0.005, 0.03, -0.02, 0.04])
    w = sp.tcp_delta_to_world(d, euler)
    assert np.allclose(w[:3], rot @ d[:3])
    # adding the world euler delta to the TCP's euler gives the body-frame rotated orientation
    assert np.allclose(sp.euler_to_matrix(euler + w[3:]), rot @ sp.euler_to_matrix(d[3:]), atol=1e-12)
    assert np.allclose(sp.world_delta_to_tcp(w, euler), d, atol=1e-12)
    batch = np.stack([d, 2 * d])
    assert sp.tcp_delta_to_world(batch, euler).shape == (2, 6)


def test_rel_action_tcp_to_world():
    euler = np.array([3.09046, -0.02908, 1.50014])
    a = np.array([1.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0])
    w = sp.rel_action_tcp_to_world(a, euler)
    # TCP x at the neutral pose is world (0.071, 0.997, 0.029): a TCP-forward push is a world +y push
    assert np.allclose(w[:3], [0.071, 0.997, 0.029], atol=2e-3)
    assert np.allclose(w[3:6], 0) and w[6] == -1.0
    rot_only = sp.rel_action_tcp_to_world([0, 0, 0, 0, 0, 1.0, 1.0], euler)
    metric = sp.tcp_delta_to_world([0, 0, 0, 0, 0, 0.05], euler)
    assert np.allclose(rot_only[3:6] * 0.05, metric[3:6])


STATIC_EYE = (2.871459, -2.166602, 2.555160)
STATIC_TARGET = (-0.026242, -0.030233, 0.392000)
STATIC_UP = (0.404140, 0.226298, 0.886262)


def test_camera_matrices_match_pybullet(client):
    assert np.allclose(sp.view_matrix(STATIC_EYE, STATIC_TARGET, STATIC_UP),
                       p.computeViewMatrix(STATIC_EYE, STATIC_TARGET, STATIC_UP), atol=1e-6)
    for _ in range(5):
        eye, target, up = RNG.normal(size=3), RNG.normal(size=3), RNG.normal(size=3)
        assert np.allclose(sp.view_matrix(eye, target, up), p.computeViewMatrix(eye, target, up), atol=1e-6)
    for fov, aspect, near, far in ((10, 1, 0.01, 10), (75, 1, 0.01, 2), (60, 4 / 3, 0.1, 5)):
        assert np.allclose(sp.projection_matrix(fov, aspect, near, far),
                           p.computeProjectionMatrixFOV(fov, aspect, near, far), atol=1e-6)


def test_project_points_land_on_rendered_spheres(client):
    """Render small spheres with TinyRenderer; each projected centre must be that sphere's pixel."""
    width, height, near, far = 96, 64, 0.01, 10.0
    eye, target, up = (1.2, -1.0, 1.0), (0.0, 0.0, 0.2), (0.0, 0.0, 1.0)
    view = sp.view_matrix(eye, target, up)
    proj = sp.projection_matrix(40, width / height, near, far)
    centres = np.array([[0.0, 0.0, 0.2], [0.25, 0.1, 0.3], [-0.2, -0.15, 0.1]])
    radius = 0.02
    shape = p.createVisualShape(p.GEOM_SPHERE, radius=radius, rgbaColor=[1, 0, 0, 1], physicsClientId=client)
    uids = [p.createMultiBody(0, -1, shape, c.tolist(), physicsClientId=client) for c in centres]
    _, _, _, depth, seg = p.getCameraImage(width, height, view, proj, renderer=p.ER_TINY_RENDERER,
                                           physicsClientId=client)
    seg, depth = np.reshape(seg, (height, width)), np.reshape(depth, (height, width))
    uv = sp.project_points(centres, view, proj, width, height)
    for uid, (u, v) in zip(uids, uv):
        col, row = int(u), int(v)
        assert seg[row, col] == uid
        assert seg[height - 1 - row, col] != uid  # a flipped v axis would land here
    for uid in uids:
        p.removeBody(uid, physicsClientId=client)


def test_depth_from_buffer_is_metric(client):
    """Looking straight down at a box top: the metric depth is the eye's height above the top face."""
    width, height, near, far = 32, 32, 0.01, 10.0
    eye = (0.1, 0.2, 1.5)
    view = sp.view_matrix(eye, (0.1, 0.2, 0.0), (0.0, 1.0, 0.0))
    proj = sp.projection_matrix(30, 1.0, near, far)
    half = [0.3, 0.3, 0.05]
    box = p.createMultiBody(0, -1, p.createVisualShape(p.GEOM_BOX, halfExtents=half, physicsClientId=client),
                            [0.1, 0.2, 0.4], physicsClientId=client)
    _, _, _, depth, seg = p.getCameraImage(width, height, view, proj, renderer=p.ER_TINY_RENDERER,
                                           physicsClientId=client)
    depth = np.reshape(depth, (height, width))
    assert np.reshape(seg, (height, width))[16, 16] == box
    assert sp.depth_from_buffer(depth[16, 16], near, far) == pytest.approx(1.5 - 0.45, abs=2e-3)
    assert sp.world_to_camera_depth([[0.1, 0.2, 0.45]], view)[0] == pytest.approx(1.05)
    p.removeBody(box, physicsClientId=client)


def test_pixel_to_world_inverts_project_points():
    view = sp.view_matrix(STATIC_EYE, STATIC_TARGET, STATIC_UP)
    proj = sp.projection_matrix(10, 1.0, 0.01, 10)
    pts = np.array([[0.0, 0.0, 0.46], [0.2, -0.1, 0.5], [-0.3, 0.1, 0.6]])
    uv = sp.project_points(pts, view, proj, 200, 200)
    depth = sp.world_to_camera_depth(pts, view)
    assert np.allclose(sp.pixel_to_world(uv, depth, view, proj, 200, 200), pts, atol=1e-9)
    behind = sp.project_points([STATIC_EYE + 2 * (np.subtract(STATIC_EYE, STATIC_TARGET))], view, proj, 200, 200)
    assert np.isnan(behind).all()


def test_bad_matrix_raises():
    with pytest.raises(ValueError, match="16 matrix values"):
        sp.project_points(np.zeros((1, 3)), np.zeros(12), np.zeros(16), 10, 10)
