"""The environment protocol that every backend (built-in scene, real calvin_env) implements.

It mirrors calvin_env's PlayTableSimEnv so that code written against calvin_env runs unchanged:

    obs = env.reset(robot_obs=None, scene_obs=None)
    obs, reward, done, info = env.step(action)
    obs = env.get_obs(); info = env.get_info()
    with env.without_cameras(): ...    # optional (both backends have it): observations without images inside

Observation dict (CALVIN's contract, see docs/CALVIN.md#observations):
    obs["rgb_obs"]["rgb_static"]      (200, 200, 3) uint8     only for cameras that were asked for
    obs["rgb_obs"]["rgb_gripper"]     (84, 84, 3) uint8
    obs["depth_obs"]["depth_static"]  (200, 200) float32 metric depth
    obs["depth_obs"]["depth_gripper"] (84, 84) float32
    obs["robot_obs"]                  (15,) float64
    obs["scene_obs"]                  (24,) float64

Actions: a 7-d array is relative (pos * 0.02 m, euler * 0.05 rad, gripper exactly +-1); a 3-tuple
(pos3, orn3|quat4, gripper) is absolute; dicts {"type": "cartesian_rel"|"cartesian_abs", "action": ...}
are accepted too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

import numpy as np

from harness.sim.layout import CAMERA_NAMES, SCENES, SceneLayout, get_layout

__all__ = ["CAMERA_NAMES", "SCENES", "ROBOT_OBS_DIM", "SCENE_OBS_DIM", "EnvDescription", "Env", "state_vector"]
ROBOT_OBS_DIM = 15
SCENE_OBS_DIM = 24


def state_vector(values: Any, size: int, name: str) -> np.ndarray:
    """robot_obs / scene_obs handed to a reset, as float64 of its size and finite (NaN would reach PyBullet)."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.shape != (size,):
        raise ValueError(f"{name} must have shape ({size},), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {arr.tolist()}")
    return arr


@dataclass(frozen=True)
class EnvDescription:
    """What a report needs to say about the environment a number was measured on."""

    backend: str  # "builtin" or "calvin"
    scene: str  # "A".."D"
    renderer: str  # "tiny" (PyBullet's CPU TinyRenderer), "egl", or "none" when no camera renders
    cameras: tuple[str, ...] = ()
    camera_sizes: dict[str, int] = field(default_factory=dict)
    version: str = ""
    # the perturbation suite's axes and levels ({} = unperturbed; harness/envs/perturbations.py)
    perturbations: dict[str, Any] = field(default_factory=dict)
    # colour -> "small" | "middle" | "big" where the blocks' sizes are not the scene's own (the block colour
    # axis swaps which block is which colour); {} = the scene's, and agents that plan from the layout use these
    block_sizes: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["cameras"] = list(self.cameras)
        for key in ("perturbations", "block_sizes"):
            if not d[key]:  # an unperturbed env's description is what it always was
                del d[key]
        return d

    def layout(self) -> SceneLayout:
        """The scene's layout, with the blocks' sizes as this env has them."""
        layout = get_layout(self.scene)
        return replace(layout, block_sizes=dict(self.block_sizes)) if self.block_sizes else layout


@runtime_checkable
class Env(Protocol):
    """One CALVIN play-table environment (one PyBullet client)."""

    description: EnvDescription

    def reset(
        self, robot_obs: np.ndarray | None = None, scene_obs: np.ndarray | None = None
    ) -> dict[str, Any]: ...

    def step(self, action: Any) -> tuple[dict[str, Any], float, bool, dict[str, Any]]: ...

    def get_obs(self) -> dict[str, Any]: ...

    def get_info(self) -> dict[str, Any]: ...

    def close(self) -> None: ...
