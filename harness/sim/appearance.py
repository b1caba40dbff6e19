"""The scene's appearance under the perturbation suite's light, color and texture axes (docs/ROBUSTNESS.md):
what a chain draws (numpy only, from the chain's seed) and the pieces the built-in scene applies it with.

PyBullet draws a TinyRenderer picture with these light settings when getCameraImage gets none (measured:
passing them draws the same picture, bit for bit), so a light perturbation starts from them. EGL honours the
same settings; its own defaults differ (it draws shadows), which a perturbed light keeps.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from typing import Any

import numpy as np

TINY_LIGHT_DIRECTION = np.array([-50.0, 30.0, 100.0]) / np.linalg.norm([-50.0, 30.0, 100.0])
TINY_LIGHT_COEFFICIENTS = {"lightAmbientCoeff": 0.6, "lightDiffuseCoeff": 0.35, "lightSpecularCoeff": 0.05}
MAX_SHAPES = 512  # random colours drawn per chain; the scene's furniture uses the first ones
TEXTURE_SIZE = 64
TEXTURE_CELLS = 8  # the pattern's coarse colour cells per side


@dataclass(frozen=True)
class Light:
    direction: tuple[float, float, float]
    intensity: float  # scales the ambient, diffuse and specular coefficients

    def camera_kwargs(self) -> dict[str, Any]:
        """getCameraImage's light arguments."""
        return {"lightDirection": list(self.direction),
                **{k: v * self.intensity for k, v in TINY_LIGHT_COEFFICIENTS.items()}}


@dataclass(frozen=True)
class Appearance:
    """One chain's appearance; None leaves that part as built."""

    light: Light | None = None
    colors: tuple[float, np.ndarray] | None = None  # (mix fraction, MAX_SHAPES x 3 random RGB in [0, 1])
    texture: np.ndarray | None = None  # TEXTURE_SIZE x TEXTURE_SIZE x 3 uint8


def random_rotation(rng: np.random.Generator, turn_deg: float) -> np.ndarray:
    """A rotation by `turn_deg` degrees about a random axis (Rodrigues' formula)."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = np.radians(turn_deg)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def draw_light(rng: np.random.Generator, turn_deg: float, intensity_range: float) -> Light:
    """TinyRenderer's light turned by `turn_deg` about a random axis, its intensity scaled by 1 +- up to
    `intensity_range`."""
    direction = random_rotation(rng, turn_deg) @ TINY_LIGHT_DIRECTION
    return Light(tuple(float(v) for v in direction), float(1.0 + rng.uniform(-intensity_range, intensity_range)))


def draw_colors(rng: np.random.Generator, mix: float) -> tuple[float, np.ndarray]:
    return mix, rng.uniform(0.0, 1.0, (MAX_SHAPES, 3))


def mixed_color(rgba: tuple[float, ...], colors: tuple[float, np.ndarray], k: int) -> tuple[float, ...]:
    """Shape k's colour mixed with its random colour (alpha kept)."""
    mix, random = colors
    return (*((1.0 - mix) * np.asarray(rgba[:3]) + mix * random[k]).tolist(), rgba[3])


def draw_texture(rng: np.random.Generator, contrast: float) -> np.ndarray:
    """A procedural texture: coarse random colour cells with a fine grain, as a factor on the part's colour
    (white = the colour as built) of the given contrast."""
    cells = np.kron(rng.uniform(0.0, 1.0, (TEXTURE_CELLS, TEXTURE_CELLS, 3)),
                    np.ones((TEXTURE_SIZE // TEXTURE_CELLS, TEXTURE_SIZE // TEXTURE_CELLS, 1)))
    pattern = 0.7 * cells + 0.3 * rng.uniform(0.0, 1.0, (TEXTURE_SIZE, TEXTURE_SIZE, 1))
    return np.rint(255 * (1.0 - contrast + contrast * pattern)).astype(np.uint8)


def load_texture(client: int, image: np.ndarray) -> int:
    """PyBullet reads textures from files: the image goes through a temporary PNG."""
    import pybullet as p
    from PIL import Image

    fd, path = tempfile.mkstemp(suffix=".png", prefix="vla-harness-texture-")
    try:
        os.close(fd)
        Image.fromarray(image).save(path)
        texture = p.loadTexture(path, physicsClientId=client)
    finally:
        os.unlink(path)
    if texture < 0:
        raise RuntimeError(f"pybullet could not load the generated texture ({image.shape})")
    return texture
