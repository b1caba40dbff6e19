"""calvin_env's two cameras (calvin-geometry.md §5) and the renderer that draws them.

Only the cameras that were asked for are rendered, and only when an observation is taken. The static
camera's matrices are fixed; the gripper camera's view is rebuilt from the TCP pose every frame.
"""

from __future__ import annotations

import pkgutil
import warnings
from dataclasses import dataclass

import numpy as np
import pybullet as p

from harness.sim.layout import CAMERA_NAMES

# In TCP coordinates: the gripper camera's origin, view direction and image up.
GRIPPER_CAM_OFFSET = np.array([-0.100, 0.0, -0.140])
GRIPPER_CAM_VIEW = np.array([0.2675, 0.0, 0.9636])
GRIPPER_CAM_UP = np.array([0.9636, 0.0, -0.2675])


@dataclass(frozen=True)
class CameraSpec:
    name: str
    size: int  # square images
    fov: float  # vertical, degrees
    near: float
    far: float

    def projection_matrix(self) -> tuple[float, ...]:
        return p.computeProjectionMatrixFOV(self.fov, 1.0, self.near, self.far)

    def metric_depth(self, buffer: np.ndarray) -> np.ndarray:
        """Depth-buffer values in [0, 1] -> metric distance along the optical axis (float32)."""
        return (self.far * self.near / (self.far - (self.far - self.near) * buffer)).astype(np.float32)


STATIC_EYE = (2.871459, -2.166602, 2.555160)
STATIC_TARGET = (-0.026242, -0.030233, 0.392000)
STATIC_UP = (0.404140, 0.226298, 0.886262)
DEFAULT_SPECS = {
    "static": CameraSpec("static", 200, 10.0, 0.01, 10.0),
    "gripper": CameraSpec("gripper", 84, 75.0, 0.01, 2.0),
}


def static_view_matrix() -> tuple[float, ...]:
    return p.computeViewMatrix(STATIC_EYE, STATIC_TARGET, STATIC_UP)


def gripper_view_matrix(tcp_pos: np.ndarray, tcp_orn: tuple[float, float, float, float]) -> tuple[float, ...]:
    rot = np.array(p.getMatrixFromQuaternion(tcp_orn)).reshape(3, 3)
    eye = tcp_pos + rot @ GRIPPER_CAM_OFFSET
    return p.computeViewMatrix(eye, eye + rot @ GRIPPER_CAM_VIEW, rot @ GRIPPER_CAM_UP)


def load_renderer(client: int, renderer: str) -> tuple[str, int]:
    """("tiny", ER_TINY_RENDERER) by default; ("egl", ER_BULLET_HARDWARE_OPENGL) when asked and the EGL
    plugin loads. When EGL was asked for but cannot load, warn and fall back to TinyRenderer: the env's
    description names the renderer really in use."""
    if renderer not in ("tiny", "egl"):
        raise ValueError(f"renderer must be 'tiny' or 'egl', got {renderer!r}")
    if renderer == "egl":
        loader = pkgutil.get_loader("eglRenderer")
        plugin = p.loadPlugin(loader.get_filename(), "_eglRendererPlugin", physicsClientId=client) if loader else -1
        if plugin >= 0:
            return "egl", p.ER_BULLET_HARDWARE_OPENGL
        warnings.warn("EGL renderer requested but PyBullet's eglRenderer plugin did not load; using TinyRenderer")
    return "tiny", p.ER_TINY_RENDERER


class CameraRig:
    """Renders the requested cameras; nothing else is drawn."""

    def __init__(self, client: int, names: tuple[str, ...], sizes: dict[str, int] | None, renderer: str) -> None:
        unknown = [n for n in names if n not in CAMERA_NAMES]
        if unknown:
            raise ValueError(f"unknown camera(s) {unknown}: expected a subset of {list(CAMERA_NAMES)}")
        sizes = dict(sizes or {})
        bad = {k: v for k, v in sizes.items() if k not in CAMERA_NAMES or int(v) <= 0}
        if bad:
            raise ValueError(f"camera_sizes must map {list(CAMERA_NAMES)} to positive sizes, got {bad}")
        self.cid = client
        self.specs = {
            n: CameraSpec(n, int(sizes.get(n, DEFAULT_SPECS[n].size)), DEFAULT_SPECS[n].fov, DEFAULT_SPECS[n].near, DEFAULT_SPECS[n].far)
            for n in names
        }
        self.renderer_name, self._renderer = load_renderer(client, renderer) if names else ("none", 0)
        self._projections = {n: s.projection_matrix() for n, s in self.specs.items()}
        self._static_view = static_view_matrix()

    @property
    def sizes(self) -> dict[str, int]:
        return {n: s.size for n, s in self.specs.items()}

    def render(self, tcp_pos: np.ndarray, tcp_orn: tuple[float, ...]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        rgb, depth = {}, {}
        for name, spec in self.specs.items():
            view = self._static_view if name == "static" else gripper_view_matrix(tcp_pos, tcp_orn)
            _, _, pixels, buffer, _ = p.getCameraImage(
                spec.size, spec.size, view, self._projections[name], renderer=self._renderer,
                flags=p.ER_NO_SEGMENTATION_MASK, physicsClientId=self.cid,
            )
            rgb[f"rgb_{name}"] = np.asarray(pixels, dtype=np.uint8).reshape(spec.size, spec.size, 4)[:, :, :3].copy()
            depth[f"depth_{name}"] = spec.metric_depth(np.asarray(buffer, dtype=np.float64).reshape(spec.size, spec.size))
        return rgb, depth
