"""Pure-numpy rotations, frames and camera geometry, in PyBullet's conventions.

Conventions (the ones calvin_env and PyBullet use, so values can be compared with them directly):
- quaternions are (x, y, z, w);
- euler angles are (roll, pitch, yaw) about the fixed world axes x, then y, then z ("xyz" extrinsic),
  i.e. R = Rz(yaw) @ Ry(pitch) @ Rx(roll), pitch in [-pi/2, pi/2];
- view / projection matrices are 16 floats in column-major (OpenGL) order, as PyBullet returns them;
- pixel coordinates: u grows to the right, v grows downwards, pixel (i, j) covers [i, i+1) x [j, j+1).

Every function accepts batched input (..., k) and returns float64 arrays.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

# --- rotations ---------------------------------------------------------------------------------


def euler_to_quat(euler: ArrayLike) -> np.ndarray:
    """(..., 3) extrinsic xyz euler (rad) -> (..., 4) quaternion xyzw (= pybullet.getQuaternionFromEuler)."""
    e = np.asarray(euler, dtype=np.float64)
    cr, cp, cy = np.cos(e[..., 0] / 2), np.cos(e[..., 1] / 2), np.cos(e[..., 2] / 2)
    sr, sp, sy = np.sin(e[..., 0] / 2), np.sin(e[..., 1] / 2), np.sin(e[..., 2] / 2)
    return np.stack(
        [
            sr * cp * cy - cr * sp * sy,
            cr * sp * cy + sr * cp * sy,
            cr * cp * sy - sr * sp * cy,
            cr * cp * cy + sr * sp * sy,
        ],
        axis=-1,
    )


def quat_to_euler(quat: ArrayLike) -> np.ndarray:
    """(..., 4) xyzw -> (..., 3) extrinsic xyz euler (rad) (= pybullet.getEulerFromQuaternion).

    The quaternion need not be normalised (squares carry its norm). Away from gimbal lock
    (|pitch| = pi/2) the decomposition is unique, so this also equals scipy's as_euler("xyz").
    """
    q = np.asarray(quat, dtype=np.float64)
    x, y, z, w = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    xx, yy, zz, ww = x * x, y * y, z * z, w * w
    roll = np.arctan2(2 * (w * x + y * z), ww - xx - yy + zz)
    pitch = np.arcsin(np.clip(2 * (w * y - x * z) / (ww + xx + yy + zz), -1.0, 1.0))
    yaw = np.arctan2(2 * (w * z + x * y), ww + xx - yy - zz)
    return np.stack([roll, pitch, yaw], axis=-1)


def axis_angle_to_quat(rotvec: ArrayLike) -> np.ndarray:
    """(..., 3) rotation vector (axis * angle, rad) -> (..., 4) quaternion xyzw."""
    v = np.asarray(rotvec, dtype=np.float64)
    angle = np.linalg.norm(v, axis=-1, keepdims=True)
    # sin(angle/2)/angle, with its limit 1/2 at 0 (no division by zero for the identity)
    scale = np.where(angle > 1e-12, np.sin(angle / 2) / np.where(angle > 1e-12, angle, 1.0), 0.5)
    return np.concatenate([v * scale, np.cos(angle / 2)], axis=-1)


def quat_multiply(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """Hamilton product a * b in xyzw: the rotation that applies b first, then a."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    ax, ay, az, aw = np.moveaxis(a, -1, 0)
    bx, by, bz, bw = np.moveaxis(b, -1, 0)
    return np.stack(
        [
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
            aw * bw - ax * bx - ay * by - az * bz,
        ],
        axis=-1,
    )


def quat_inverse(quat: ArrayLike) -> np.ndarray:
    """The inverse rotation (conjugate over squared norm, so unnormalised input works too)."""
    q = np.asarray(quat, dtype=np.float64)
    conj = q * np.array([-1.0, -1.0, -1.0, 1.0])
    return conj / np.sum(q * q, axis=-1, keepdims=True)


def quat_to_matrix(quat: ArrayLike) -> np.ndarray:
    """(..., 4) xyzw (normalised here) -> (..., 3, 3) rotation matrix."""
    q = np.asarray(quat, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    x, y, z, w = np.moveaxis(q, -1, 0)
    rows = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ]
    return np.stack([np.stack(r, axis=-1) for r in rows], axis=-2)


def matrix_to_quat(matrix: ArrayLike) -> np.ndarray:
    """(..., 3, 3) rotation matrix -> (..., 4) xyzw with w >= 0.

    Picks, per matrix, the largest of 4w^2, 4x^2, 4y^2, 4z^2 as the pivot (Shepperd's method), so no
    branch divides by a small number.
    """
    m = np.asarray(matrix, dtype=np.float64)
    tr = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    # candidates: rows are (x, y, z, w) * 4 * pivot for the pivots w, x, y, z
    cand = np.stack(
        [
            np.stack([m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1], 1 + tr], -1),
            np.stack([1 + 2 * m[..., 0, 0] - tr, m[..., 0, 1] + m[..., 1, 0], m[..., 0, 2] + m[..., 2, 0],
                      m[..., 2, 1] - m[..., 1, 2]], -1),
            np.stack([m[..., 0, 1] + m[..., 1, 0], 1 + 2 * m[..., 1, 1] - tr, m[..., 1, 2] + m[..., 2, 1],
                      m[..., 0, 2] - m[..., 2, 0]], -1),
            np.stack([m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1], 1 + 2 * m[..., 2, 2] - tr,
                      m[..., 1, 0] - m[..., 0, 1]], -1),
        ],
        axis=-2,
    )
    pivots = np.stack([1 + tr, 1 + 2 * m[..., 0, 0] - tr, 1 + 2 * m[..., 1, 1] - tr, 1 + 2 * m[..., 2, 2] - tr], -1)
    best = np.argmax(pivots, axis=-1)
    q = np.take_along_axis(cand, best[..., None, None], axis=-2)[..., 0, :]
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    return np.where(q[..., 3:4] < 0, -q, q)


def euler_to_matrix(euler: ArrayLike) -> np.ndarray:
    """(..., 3) extrinsic xyz euler -> (..., 3, 3), R = Rz @ Ry @ Rx."""
    return quat_to_matrix(euler_to_quat(euler))


def matrix_to_euler(matrix: ArrayLike) -> np.ndarray:
    """(..., 3, 3) -> (..., 3) extrinsic xyz euler, pitch in [-pi/2, pi/2]."""
    m = np.asarray(matrix, dtype=np.float64)
    roll = np.arctan2(m[..., 2, 1], m[..., 2, 2])
    pitch = np.arcsin(np.clip(-m[..., 2, 0], -1.0, 1.0))
    yaw = np.arctan2(m[..., 1, 0], m[..., 0, 0])
    return np.stack([roll, pitch, yaw], axis=-1)


def relative_rotation_euler(quat_start: ArrayLike, quat_end: ArrayLike, degrees: bool = False) -> np.ndarray:
    """Euler xyz of end * start^-1: the world-frame rotation that turns the start pose into the end pose.

    This is the quantity CALVIN's rotate_* tasks threshold (docs/CALVIN.md#task-thresholds).
    """
    euler = quat_to_euler(quat_multiply(quat_end, quat_inverse(quat_start)))
    return np.degrees(euler) if degrees else euler


def quat_to_rotvec(quat: ArrayLike) -> np.ndarray:
    """(..., 4) xyzw -> (..., 3) axis-angle (rotation vector: unit axis times the angle in [0, pi])."""
    q = np.asarray(quat, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    q = np.where(q[..., 3:4] < 0, -q, q)  # w >= 0: the angle stays within [0, pi]
    sin_half = np.linalg.norm(q[..., :3], axis=-1, keepdims=True)
    angle = 2 * np.arctan2(sin_half, q[..., 3:4])
    # angle / sin(angle / 2) -> 2 as the angle -> 0
    scale = np.where(sin_half > 1e-12, angle / np.maximum(sin_half, 1e-12), 2.0)
    return q[..., :3] * scale


def wrap_angle(angle: ArrayLike) -> np.ndarray:
    """Angles wrapped into [-pi, pi)."""
    return (np.asarray(angle, dtype=np.float64) + np.pi) % (2 * np.pi) - np.pi


# --- frames ------------------------------------------------------------------------------------


def tcp_to_world(points_tcp: ArrayLike, tcp_pos: ArrayLike, tcp_euler: ArrayLike) -> np.ndarray:
    """(N, 3) points in the TCP frame -> world, for a TCP at robot_obs[0:3] with euler robot_obs[3:6]."""
    rot = euler_to_matrix(tcp_euler)
    return np.asarray(points_tcp, dtype=np.float64) @ rot.T + np.asarray(tcp_pos, dtype=np.float64)


def world_to_tcp(points_world: ArrayLike, tcp_pos: ArrayLike, tcp_euler: ArrayLike) -> np.ndarray:
    """(N, 3) world points -> the TCP frame (inverse of tcp_to_world)."""
    rot = euler_to_matrix(tcp_euler)
    return (np.asarray(points_world, dtype=np.float64) - np.asarray(tcp_pos, dtype=np.float64)) @ rot


def tcp_delta_to_world(delta_tcp: ArrayLike, tcp_euler: ArrayLike) -> np.ndarray:
    """A (..., 6) TCP-frame delta (metres, rad) -> the world-frame delta calvin_env's relative action adds.

    Position: the TCP axes rotated into the world. Orientation: the TCP-frame rotation R_d is applied
    in the body frame (R_new = R_cur @ R_d); calvin_env adds euler deltas to the target's euler
    angles, so the world delta is euler(R_new) - euler(R_cur), wrapped into [-pi, pi).
    """
    d = np.asarray(delta_tcp, dtype=np.float64)
    cur = np.asarray(tcp_euler, dtype=np.float64)
    rot = euler_to_matrix(cur)
    pos = np.einsum("ij,...j->...i", rot, d[..., :3])
    new = matrix_to_euler(rot @ euler_to_matrix(d[..., 3:6]))
    return np.concatenate([pos, wrap_angle(new - cur)], axis=-1)


def world_delta_to_tcp(delta_world: ArrayLike, tcp_euler: ArrayLike) -> np.ndarray:
    """Inverse of tcp_delta_to_world: a (..., 6) world delta -> the TCP-frame delta."""
    d = np.asarray(delta_world, dtype=np.float64)
    cur = np.asarray(tcp_euler, dtype=np.float64)
    rot = euler_to_matrix(cur)
    pos = np.einsum("ji,...j->...i", rot, d[..., :3])
    rel = matrix_to_euler(rot.T @ euler_to_matrix(cur + d[..., 3:6]))
    return np.concatenate([pos, rel], axis=-1)


def rel_action_tcp_to_world(
    action: ArrayLike, tcp_euler: ArrayLike, pos_scale: float = 0.02, orn_scale: float = 0.05
) -> np.ndarray:
    """A (..., 7) relative action whose arm part is in TCP axes -> the same action in world axes.

    The scales are calvin_env's (0.02 m and 0.05 rad per unit, docs/CALVIN.md#actions); the rotation part
    is converted in radians because the conversion is not linear. The gripper passes through.
    """
    a = np.asarray(action, dtype=np.float64)
    metric = np.concatenate([a[..., :3] * pos_scale, a[..., 3:6] * orn_scale], axis=-1)
    world = tcp_delta_to_world(metric, tcp_euler)
    return np.concatenate([world[..., :3] / pos_scale, world[..., 3:6] / orn_scale, a[..., 6:7]], axis=-1)


# --- cameras -----------------------------------------------------------------------------------


def view_matrix(eye: ArrayLike, target: ArrayLike, up: ArrayLike) -> tuple[float, ...]:
    """16 floats, column-major, as pybullet.computeViewMatrix(eye, target, up) returns them.

    A look-at matrix: the camera looks along -z of its frame; only the part of `up` perpendicular
    to the view direction sets the image's up.
    """
    eye_v = np.asarray(eye, dtype=np.float64)
    f = np.asarray(target, dtype=np.float64) - eye_v
    f /= np.linalg.norm(f)
    s = np.cross(f, np.asarray(up, dtype=np.float64))
    s /= np.linalg.norm(s)
    u = np.cross(s, f)
    m = np.eye(4)
    m[0, :3], m[1, :3], m[2, :3] = s, u, -f
    m[:3, 3] = -m[:3, :3] @ eye_v
    return tuple(float(v) for v in m.T.reshape(-1))


def projection_matrix(fov_deg: float, aspect: float, near: float, far: float) -> tuple[float, ...]:
    """16 floats, column-major, as pybullet.computeProjectionMatrixFOV(fov, aspect, near, far)."""
    y_scale = 1.0 / np.tan(np.radians(fov_deg) / 2)
    m = np.zeros((4, 4))
    m[0, 0] = y_scale / aspect
    m[1, 1] = y_scale
    m[2, 2] = (far + near) / (near - far)
    m[2, 3] = 2 * far * near / (near - far)
    m[3, 2] = -1.0
    return tuple(float(v) for v in m.T.reshape(-1))


def _gl_matrix(flat: ArrayLike) -> np.ndarray:
    """16 column-major floats -> a 4x4 matrix acting on column vectors."""
    flat = np.asarray(flat, dtype=np.float64)
    if flat.shape != (16,):
        raise ValueError(f"expected 16 matrix values (column-major), got shape {flat.shape}")
    return flat.reshape(4, 4).T


def project_points(
    points_world: ArrayLike, view: ArrayLike, proj: ArrayLike, width: int, height: int
) -> np.ndarray:
    """(N, 3) world points -> (N, 2) continuous pixel coordinates (u right, v down).

    Pixel (i, j) of an image of that size, as pybullet.getCameraImage returns it (row j, column i),
    covers u in [i, i+1) and v in [j, j+1). Points behind the camera get NaN.
    """
    pts = np.asarray(points_world, dtype=np.float64).reshape(-1, 3)
    homo = np.concatenate([pts, np.ones((len(pts), 1))], axis=1)
    clip = homo @ (_gl_matrix(proj) @ _gl_matrix(view)).T
    with np.errstate(divide="ignore", invalid="ignore"):
        ndc = clip[:, :2] / clip[:, 3:4]
    uv = np.stack([(ndc[:, 0] + 1) / 2 * width, (1 - ndc[:, 1]) / 2 * height], axis=1)
    uv[clip[:, 3] <= 0] = np.nan
    return uv


def world_to_camera_depth(points_world: ArrayLike, view: ArrayLike) -> np.ndarray:
    """(N, 3) world points -> (N,) metric depth along the optical axis (what depth images hold)."""
    pts = np.asarray(points_world, dtype=np.float64).reshape(-1, 3)
    cam = pts @ _gl_matrix(view)[:3, :3].T + _gl_matrix(view)[:3, 3]
    return -cam[:, 2]


def depth_from_buffer(buffer: ArrayLike, near: float, far: float) -> np.ndarray:
    """OpenGL depth-buffer values in [0, 1] -> metric depth along the optical axis."""
    b = np.asarray(buffer, dtype=np.float64)
    return far * near / (far - (far - near) * b)


def pixel_to_world(
    uv: ArrayLike, depth: ArrayLike, view: ArrayLike, proj: ArrayLike, width: int, height: int
) -> np.ndarray:
    """Inverse of project_points: (N, 2) pixel coords with (N,) metric depths -> (N, 3) world points."""
    uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
    depth = np.asarray(depth, dtype=np.float64).reshape(-1)
    p = _gl_matrix(proj)
    x_ndc = uv[:, 0] / width * 2 - 1
    y_ndc = 1 - uv[:, 1] / height * 2
    # camera frame: z = -depth, x = x_ndc * depth / P[0,0], y = y_ndc * depth / P[1,1]
    cam = np.stack([x_ndc * depth / p[0, 0], y_ndc * depth / p[1, 1], -depth, np.ones_like(depth)], axis=1)
    return (cam @ np.linalg.inv(_gl_matrix(view)).T)[:, :3]
