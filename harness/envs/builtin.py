"""The built-in CALVIN-compatible scene: calvin_env's contract on our own PyBullet play table.

Physics as calvin_env sets it (docs/GEOMETRY.md#physics): gravity -9.8, 1/240 s time step, 8 substeps per
env step (30 Hz control), 50 solver iterations, deterministic overlapping pairs.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import replace
from typing import Any, Iterator

import numpy as np
import pybullet as p

from harness import __version__
from harness.envs.actions import AbsoluteAction, parse_action
from harness.envs.base import CAMERA_NAMES, ROBOT_OBS_DIM, SCENE_OBS_DIM, EnvDescription, state_vector
from harness.sim.appearance import Appearance, load_texture, mixed_color
from harness.sim.cameras import CameraRig, VisualShape, load_renderer, visual_shapes
from harness.sim.distractors import DistractorKind
from harness.sim.layout import NEUTRAL_JOINTS, get_layout
from harness.sim.robot import PandaRobot
from harness.sim.scene import PlayTableScene

SUBSTEPS = 8
TIME_STEP = 1.0 / 240.0


class BuiltinEnv:
    """One play-table scene in its own PyBullet client (DIRECT mode, no window)."""

    def __init__(
        self,
        scene: str = "D",
        cameras: tuple[str, ...] | list[str] = CAMERA_NAMES,
        camera_sizes: dict[str, int] | None = None,
        renderer: str = "tiny",
        seed: int = 0,
        legacy_button_reset: bool = False,
        step_after_reset: bool = True,
    ) -> None:
        # calvin_env steps the physics once after a reset (contacts found, a held block settles by up to half a
        # millimetre); False keeps the restored poses exact and only runs collision detection, for readers of
        # recorded states (the sync check), where half a millimetre can decide a threshold (docs/DOCTOR.md)
        self.step_after_reset = step_after_reset
        self.layout = get_layout(scene)
        self.cid = p.connect(p.DIRECT)
        try:
            if cameras:
                load_renderer(self.cid, renderer)
            self._setup_physics()
            self.robot = PandaRobot(self.cid)
            self.scene = PlayTableScene(self.cid, self.layout, legacy_button_reset=legacy_button_reset)
            self.cameras = CameraRig(
                self.cid, tuple(cameras), camera_sizes, renderer, static_layer=self.scene.static_layer(self.robot.uid)
            )
        except Exception:
            p.disconnect(self.cid)
            raise
        self.rng = np.random.default_rng(seed)
        self._render = True  # False inside without_cameras()
        self._furniture = self.scene.furniture_shapes()  # their colours as built: what the color axis mixes
        self.description = EnvDescription(
            backend="builtin",
            scene=self.layout.name,
            renderer=self.cameras.renderer_name,
            cameras=tuple(cameras),
            camera_sizes=self.cameras.sizes,
            version=f"vla-harness {__version__}, pybullet {p.getAPIVersion()}",
        )
        self.reset()

    def _setup_physics(self) -> None:
        p.setGravity(0, 0, -9.8, physicsClientId=self.cid)
        p.setTimeStep(TIME_STEP, physicsClientId=self.cid)
        p.setPhysicsEngineParameter(
            numSolverIterations=50, numSubSteps=0, deterministicOverlappingPairs=1, physicsClientId=self.cid
        )

    # ------------------------------------------------------------------ the calvin_env API

    def reset(self, robot_obs: np.ndarray | None = None, scene_obs: np.ndarray | None = None) -> dict[str, Any]:
        """Restore a recorded state exactly, or (None) do calvin_env's random reset: furniture closed,
        lights off, blocks on random surfaces, robot at the neutral pose."""
        if scene_obs is None:
            self.scene.reset(np.zeros(SCENE_OBS_DIM))
            scene_obs = self.scene.random_scene_obs(self.rng)
        scene_obs = state_vector(scene_obs, SCENE_OBS_DIM, "scene_obs")
        if robot_obs is None:
            arm, width, gripper = np.array(NEUTRAL_JOINTS), 0.08, 1
        else:
            robot_obs = state_vector(robot_obs, ROBOT_OBS_DIM, "robot_obs")
            arm, width, gripper = robot_obs[7:14], robot_obs[6], int(np.sign(robot_obs[14]) or 1)
        self._forget_contacts()
        self.scene.reset(scene_obs)
        self.robot.reset(arm, width, gripper)
        if self.step_after_reset:
            p.stepSimulation(physicsClientId=self.cid)
        else:
            p.performCollisionDetection(physicsClientId=self.cid)
        return self.get_obs()

    def _forget_contacts(self) -> None:
        """PyBullet keeps contact manifolds, and the impulses it warm-starts from, across resets of body
        poses; the same state would then evolve differently depending on what ran before. Pulling every
        body apart and running collision detection once drops them all."""
        for k, uid in enumerate(self.scene.block_uids.values()):
            p.resetBasePositionAndOrientation(uid, (10.0 * (k + 1), 10.0, 10.0), (0, 0, 0, 1), physicsClientId=self.cid)
        self.scene.distractors.park()
        self.scene.reset_furniture(np.zeros(4))
        self.robot.reset(np.array(NEUTRAL_JOINTS), 0.08, 1)
        p.performCollisionDetection(physicsClientId=self.cid)

    def step(self, action: Any) -> tuple[dict[str, Any], float, bool, dict[str, Any]]:
        parsed = parse_action(action)
        if isinstance(parsed, AbsoluteAction):
            euler = parsed.orn if parsed.orn.shape[0] == 3 else np.array(p.getEulerFromQuaternion(parsed.orn.tolist()))
            self.robot.apply_absolute(parsed.pos, euler, parsed.gripper)
        else:
            self.robot.apply_relative(parsed.values)
        for _ in range(SUBSTEPS):
            p.stepSimulation(physicsClientId=self.cid)
        self.scene.update_lights()
        return self.get_obs(), 0.0, False, self.get_info()

    def get_obs(self) -> dict[str, Any]:
        rgb, depth = {}, {}
        if self.cameras.specs and self._render:
            rgb, depth = self.cameras.render(*self.robot.tcp_pose())
        return {
            "rgb_obs": rgb,
            "depth_obs": depth,
            "robot_obs": self.robot.observation(),
            "scene_obs": self.scene.observation(),
        }

    @contextmanager
    def without_cameras(self) -> Iterator[None]:
        """Observations without images inside (state vectors only): for steps nobody looks at, such as the
        scripted expert's setup of a single-task episode. Rendering never changes the physics."""
        self._render = False
        try:
            yield
        finally:
            self._render = True

    def set_static_view(self, eye: np.ndarray, target: np.ndarray, up: np.ndarray) -> None:
        """Move the static camera (harness/envs/perturbations.py's camera axis)."""
        self.cameras.set_static_view(eye, target, up)

    def set_appearance(self, appearance: Appearance) -> None:
        """This chain's light, furniture colours and texture (harness/envs/perturbations.py's appearance
        axes); the parts left None are drawn as built. Rendering only: the physics never sees them."""
        self.cameras.set_light(appearance.light.camera_kwargs() if appearance.light else {})
        if appearance.colors is not None:
            self.cameras.recolor([replace(s, rgba=mixed_color(s.rgba, appearance.colors, k))
                                  for k, s in enumerate(self._furniture)])
        if appearance.texture is not None:
            self.cameras.retexture(self._furniture, load_texture(self.cid, appearance.texture))

    def scale_block_dynamics(self, friction: float = 1.0, mass: float = 1.0) -> None:
        """The blocks' friction and mass times these factors (harness/envs/perturbations.py's dynamics axes)."""
        self.scene.scale_block_dynamics(friction, mass)

    def set_furniture_dynamics(self, friction: float = 1.0, mass: float = 1.0, damping: float = 0.0) -> None:
        """The door's, drawer's, button's and switch's friction, mass and joint damping (the furniture axes)."""
        self.scene.set_furniture_dynamics(friction, mass, damping)

    def add_distractors(self, kinds: tuple[DistractorKind, ...]) -> None:
        """Bodies for the distractor axis (harness/envs/perturbations.py); `set_distractor_poses` places them."""
        for uid in self.scene.add_distractors(kinds):
            self.cameras.add_movers(visual_shapes(self.cid, uid))

    def set_distractor_poses(self, centres: np.ndarray) -> None:
        """Where the distractors stand from the next reset on (a chain's draw)."""
        self.scene.distractors.poses = np.asarray(centres, dtype=np.float64).reshape(-1, 3)

    def permute_block_colors(self, permutation: dict[str, str]) -> None:
        """The block colour axis (harness/envs/perturbations.py): the block that was colour c is colour
        permutation[c] from now on, to the eye and to the state; the description names the blocks' sizes."""
        colours = self.scene.permute_block_colors(permutation)
        self.cameras.recolor([VisualShape(uid, -1, 0, rgba) for uid, rgba in colours.items()])  # a block: one shape
        self.layout = self.scene.layout
        self.description = replace(self.description, block_sizes=dict(self.layout.block_sizes))

    def get_info(self) -> dict[str, Any]:
        return {"robot_info": self.robot.info(), "scene_info": self.scene.info()}

    def get_state_obs(self) -> dict[str, np.ndarray]:
        """robot_obs and scene_obs only (calvin_env's name); never renders."""
        return {"robot_obs": self.robot.observation(), "scene_obs": self.scene.observation()}

    def close(self) -> None:
        if self.cid is not None:
            p.disconnect(self.cid)
            self.cid = None  # disown the id: PyBullet reuses it for the next client

    def __enter__(self) -> "BuiltinEnv":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: pybullet may already be gone
            pass
