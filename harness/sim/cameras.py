"""calvin_env's two cameras (docs/GEOMETRY.md#cameras) and the renderer that draws them.

Only the cameras that were asked for are rendered, and only when an observation is taken. The static
camera's matrices are fixed; the gripper camera's view is rebuilt from the TCP pose every frame.
"""

from __future__ import annotations

import ctypes.util
import functools
import importlib.util
import subprocess
import sys
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pybullet as p

from harness.sim.appearance import random_rotation
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


def jittered_static_pose(rng: np.random.Generator, shift_m: float, turn_deg: float
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The static camera moved by `shift_m` metres in a random direction and turned by `turn_deg` degrees
    about a random axis through its eye: (eye, target, up) for `CameraRig.set_static_view`. The
    perturbation suite's camera axis (docs/ROBUSTNESS.md)."""
    eye, target, up = (np.asarray(v, dtype=np.float64) for v in (STATIC_EYE, STATIC_TARGET, STATIC_UP))
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    rotation = random_rotation(rng, turn_deg)  # of the view direction and the up vector
    new_eye = eye + shift_m * direction
    return new_eye, new_eye + rotation @ (target - eye), rotation @ up


def gripper_view_matrix(tcp_pos: np.ndarray, tcp_orn: tuple[float, float, float, float]) -> tuple[float, ...]:
    rot = np.array(p.getMatrixFromQuaternion(tcp_orn)).reshape(3, 3)
    eye = tcp_pos + rot @ GRIPPER_CAM_OFFSET
    return p.computeViewMatrix(eye, eye + rot @ GRIPPER_CAM_VIEW, rot @ GRIPPER_CAM_UP)


RENDERERS = {"tiny": p.ER_TINY_RENDERER, "egl": p.ER_BULLET_HARDWARE_OPENGL}
EGL_PACKAGES = "libegl1 libegl-mesa0 libgl1-mesa-dri"  # Debian/Ubuntu: libEGL and Mesa's software EGL driver
# A child process loads the plugin and draws one box: the plugin ends its whole process when EGL fails to start
_EGL_PROBE = """
import importlib.util, sys, numpy as np, pybullet as p
plugin = importlib.util.find_spec("eglRenderer")
if plugin is None:
    sys.exit("this pybullet has no eglRenderer plugin")
cid = p.connect(p.DIRECT)
if p.loadPlugin(plugin.origin, "_eglRendererPlugin") < 0:
    sys.exit("pybullet's loadPlugin refused the eglRenderer plugin")
p.createMultiBody(0, -1, p.createVisualShape(p.GEOM_BOX, halfExtents=[1, 1, 1], rgbaColor=[1, 0, 0, 1]))
view = p.computeViewMatrix([0, -5, 0], [0, 0, 0], [0, 0, 1])
rgb = p.getCameraImage(8, 8, view, p.computeProjectionMatrixFOV(60, 1, 0.1, 10), renderer=p.ER_BULLET_HARDWARE_OPENGL)[2]
if np.asarray(rgb, dtype=np.uint8).reshape(8, 8, 4)[4, 4, 0] < 100:
    sys.exit("the eglRenderer plugin loaded but drew nothing")
"""


@functools.lru_cache(maxsize=None)
def egl_problem() -> str | None:
    """None when PyBullet's EGL renderer works in this environment; otherwise what is wrong and what to
    install. Tried once per process, in a child process."""
    try:
        probe = subprocess.run([sys.executable, "-c", _EGL_PROBE], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return "a test render with pybullet's eglRenderer plugin did not finish in 120 s"
    if probe.returncode == 0:
        return None
    said = list(dict.fromkeys(line.strip() for line in (probe.stdout + probe.stderr).splitlines()
                              if line.strip() and "build time" not in line))
    missing = "" if ctypes.util.find_library("EGL") else "libEGL.so.1 is not installed; "
    return (f"PyBullet's EGL renderer cannot start here ({missing}the test render said: {' | '.join(said[-3:]) or 'nothing'}). "
            f"It needs libEGL and an EGL driver; Mesa's software one works without a GPU "
            f"(Debian/Ubuntu: apt-get install {EGL_PACKAGES}). Or use renderer=tiny")


def renderer_flag(renderer: str) -> int:
    """PyBullet's getCameraImage flag for "tiny" or "egl"."""
    if renderer not in RENDERERS:
        raise ValueError(f"renderer must be 'tiny' or 'egl', got {renderer!r}")
    return RENDERERS[renderer]


def load_renderer(client: int, renderer: str) -> None:
    """Make `renderer` ("tiny" | "egl") drawable in `client`. EGL: PyBullet's eglRenderer plugin, which draws
    only the bodies loaded after it, so this comes before any body; an EGL that cannot start is an error
    naming what is missing (`egl_problem`)."""
    if renderer_flag(renderer) == RENDERERS["egl"]:
        problem = egl_problem()
        if problem is not None:
            raise RuntimeError(f"renderer=egl: {problem}")
        plugin = importlib.util.find_spec("eglRenderer").origin
        if p.loadPlugin(plugin, "_eglRendererPlugin", physicsClientId=client) < 0:
            raise RuntimeError("renderer=egl: pybullet's loadPlugin refused the eglRenderer plugin")


@dataclass(frozen=True)
class VisualShape:
    body: int
    link: int
    index: int  # shape index within the link
    rgba: tuple[float, float, float, float]


def visual_shapes(client: int, body: int, links: set[int] | None = None) -> list[VisualShape]:
    """Every visual shape of a body (optionally of some links only), with its own colour."""
    shapes, counts = [], {}
    for data in p.getVisualShapeData(body, physicsClientId=client):
        link = data[1]
        index = counts.get(link, 0)
        counts[link] = index + 1
        if links is None or link in links:
            shapes.append(VisualShape(body, link, index, tuple(data[7])))
    return shapes


@dataclass
class StaticLayer:
    """What the static camera sees of the scene's furniture, cached while the furniture stays put.

    The static camera never moves, and neither does most of what it sees: the table's base, the floor,
    the robot's base, and the table's moving links whenever they are at rest. `furniture` names those
    shapes, `movers` the robot arm and the blocks, and `key()` returns the furniture's state (joint
    values, lights). Shapes in neither list (the lights, whose colours change) are drawn in both passes.
    The furniture is drawn (colour + depth buffer) only when its key changes; every step draws the
    movers alone and composites the two by depth, which gives the picture of drawing everything at
    once (a depth tie goes to the furniture, as when it is drawn last)."""

    furniture: list[VisualShape]
    movers: list[VisualShape]
    key: Callable[[], tuple]


class CameraRig:
    """Renders the requested cameras; nothing else is drawn."""

    def __init__(
        self, client: int, names: tuple[str, ...], sizes: dict[str, int] | None, renderer: str,
        static_layer: StaticLayer | None = None,
    ) -> None:
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
        # "egl" draws through the plugin that `load_renderer` loaded before the bodies
        self.renderer_name, self._renderer = (renderer, renderer_flag(renderer)) if names else ("none", 0)
        self._projections = {n: s.projection_matrix() for n, s in self.specs.items()}
        self._static_view = static_view_matrix()
        # EGL draws shadows: a mover's shadow falls on the furniture, which a cached layer would not show
        self._layer = static_layer if renderer == "tiny" else None
        self._layer_key: tuple | None = None
        self._layer_image: tuple[np.ndarray, np.ndarray] | None = None
        self._hidden: str | None = None  # which group of the static layer is hidden now, if any
        self._light: dict[str, Any] = {}  # getCameraImage's light arguments; none: the renderer's defaults

    @property
    def sizes(self) -> dict[str, int]:
        return {n: s.size for n, s in self.specs.items()}

    def render(
        self, tcp_pos: np.ndarray, tcp_orn: tuple[float, ...], names: tuple[str, ...] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """RGB and metric depth of the configured cameras (or the given subset of them)."""
        rgb, depth = {}, {}
        for name in names if names is not None else tuple(self.specs):
            spec = self.specs[name]
            if name == "static" and self._layer is not None:
                colour, buffer = self._draw_static_layered(spec)
            else:
                self._hide(None)
                colour, buffer = self._draw(spec, self._static_view if name == "static" else gripper_view_matrix(tcp_pos, tcp_orn))
            rgb[f"rgb_{name}"] = colour
            depth[f"depth_{name}"] = spec.metric_depth(buffer)
        return rgb, depth

    def set_static_view(self, eye: np.ndarray, target: np.ndarray, up: np.ndarray) -> None:
        """Move the static camera (the perturbation suite's camera axis); the cached layer is drawn anew."""
        self._static_view = p.computeViewMatrix([float(v) for v in eye], [float(v) for v in target], [float(v) for v in up])
        self._layer_key = None

    def add_movers(self, shapes: list[VisualShape]) -> None:
        """Bodies added to the scene after the layer was made (the distractor axis): drawn with the movers."""
        if self._layer is not None:
            self._hide(None)
            self._layer.movers.extend(shapes)
            self._layer_key = None

    @property
    def static_view(self) -> tuple[float, ...]:
        return self._static_view

    def set_light(self, light: dict[str, Any]) -> None:
        """getCameraImage's light arguments ({}: the renderer's own light); the cached layer is drawn anew."""
        self._light = dict(light)
        self._layer_key = None

    def recolor(self, shapes: list[VisualShape]) -> None:
        """Give these shapes their (new) colours, also where the static layer restores them from."""
        self._hide(None)
        for shape in shapes:
            p.changeVisualShape(shape.body, shape.link, shapeIndex=shape.index, rgbaColor=shape.rgba, physicsClientId=self.cid)
        if self._layer is not None:
            new = {(s.body, s.link, s.index): s for s in shapes}
            for group in (self._layer.furniture, self._layer.movers):
                group[:] = [new.get((s.body, s.link, s.index), s) for s in group]
        self._layer_key = None

    def retexture(self, shapes: list[VisualShape], texture: int) -> None:
        """Draw these shapes with a loaded texture (times their colour)."""
        self._hide(None)
        for shape in shapes:
            p.changeVisualShape(shape.body, shape.link, shapeIndex=shape.index, textureUniqueId=texture, physicsClientId=self.cid)
        self._layer_key = None

    def _draw(self, spec: CameraSpec, view: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
        _, _, pixels, buffer, _ = p.getCameraImage(
            spec.size, spec.size, view, self._projections[spec.name], renderer=self._renderer,
            flags=p.ER_NO_SEGMENTATION_MASK, physicsClientId=self.cid, **self._light,
        )
        colour = np.asarray(pixels, dtype=np.uint8).reshape(spec.size, spec.size, 4)[:, :, :3].copy()
        return colour, np.asarray(buffer, dtype=np.float32).reshape(spec.size, spec.size)

    def _draw_static_layered(self, spec: CameraSpec) -> tuple[np.ndarray, np.ndarray]:
        key = self._layer.key()
        if key != self._layer_key:
            self._hide("movers")
            self._layer_image = self._draw(spec, self._static_view)
            self._layer_key = key
        self._hide("furniture")
        colour, buffer = self._draw(spec, self._static_view)
        layer_colour, layer_buffer = self._layer_image
        nearer = buffer < layer_buffer
        return np.where(nearer[..., None], colour, layer_colour), np.where(nearer, buffer, layer_buffer)

    def _hide(self, group: str | None) -> None:
        """Hide one group of the static layer (alpha 0 shapes are skipped by the renderer), or none."""
        if group == self._hidden or self._layer is None:
            return
        for shape in self._group(self._hidden):
            p.changeVisualShape(shape.body, shape.link, shapeIndex=shape.index, rgbaColor=shape.rgba, physicsClientId=self.cid)
        for shape in self._group(group):
            p.changeVisualShape(shape.body, shape.link, shapeIndex=shape.index, rgbaColor=(*shape.rgba[:3], 0.0), physicsClientId=self.cid)
        self._hidden = group

    def _group(self, group: str | None) -> list[VisualShape]:
        return [] if group is None else getattr(self._layer, group)
