"""Perturbations of the evaluation's env: named axes with integer levels, 0 = unperturbed (docs/ROBUSTNESS.md).

    EnvConfig(perturb=Perturbations(camera=2)).build()       # the env, wrapped: the static camera moved 2 cm / 2 deg
    python -m harness.eval env.perturb.action_noise=1         # the same from the command line

The env config owns them, so an evaluation records them (results.json `env.perturbations`, the resume key)
and every caller that builds an env from the config gets the same ones. Who applies which:

| axis | what | applied by |
|---|---|---|
| action_noise | Gaussian noise on the arm part of each action | `PerturbedEnv.step` |
| start_pose | the robot's arm joints moved off the chain's start pose | `PerturbedEnv.reset` after `new_chain` |
| camera | the static camera's pose jittered (1, 2, 4 cm; a quarter as many degrees), once per chain | `PerturbedEnv.new_chain` (built-in scene, env=calvin) |
| image_noise, blur | Gaussian pixel noise, Gaussian blur of every rendered RGB image | `PerturbedEnv`'s observations |
| friction, mass | the blocks' lateral friction and mass scaled | `PerturbedEnv` when built (built-in scene, env=calvin) |
| light, color, texture | the light's direction and intensity, furniture colours, a procedural texture, per chain | `PerturbedEnv.new_chain` (built-in scene; harness/sim/appearance.py) |
| latency, language | the policy sees observations k steps old; instructions reworded | the rollout (harness/eval/rollout.py) |
| distractors | 1, 2, 4 objects on the table, away from every task's reach, placed per chain | `PerturbedEnv` when built (the bodies) and `new_chain` (built-in scene, env=calvin) |
| block_colors | blocks swap colours; "the red block" is the one that looks red (scene_axes.py) | `PerturbedEnv` when built (built-in scene) |
| block_position | blocks that start on the table moved 2, 4, 8 cm off CALVIN's slots | `PerturbedEnv.reset` after `new_chain` |
| furniture_friction, _mass, _damping | the door's, drawer's, button's and switch's joints | `PerturbedEnv` when built (built-in scene, env=calvin) |

Every random draw comes from the chain's seed (`new_chain(seed)`, which the rollout calls with the job's
seed, `seed + chain index`) and the axis, each axis from a stream of its own: a chain is perturbed the same
way on any worker, on resume, and whatever other axes are on. All levels 0 build the plain env, bit for bit.
"""

from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np

from harness.envs.actions import AbsoluteAction, RelativeAction, parse_action
from harness.envs.base import Env
from harness.envs.scene_axes import COLOR_LEVEL_NAMES, COLOR_PERMUTATIONS, shift_table_blocks
from harness.sim.distractors import DISTRACTORS, place_distractors
from harness.spatial import euler_to_quat, quat_to_euler

LEVELS = 3  # levels 1..3 on every axis


@dataclass(frozen=True)
class Axis:
    name: str
    group: str  # dynamics | visual | language | robot | timing (the families)
    unit: str
    values: tuple[float, ...]  # the amount at levels 1..LEVELS

    def value(self, level: int) -> float:
        return 0.0 if level == 0 else self.values[level - 1]

    def level_name(self, level: int) -> str:
        return "none" if level == 0 else f"{self.values[level - 1]:g} {self.unit}"


AXES: dict[str, Axis] = {a.name: a for a in (
    # std of the noise in the action's own units (relative actions: arm values in [-1, 1])
    Axis("action_noise", "dynamics", "std", (0.1, 0.25, 0.5)),
    Axis("latency", "timing", "step(s) old", (1, 2, 4)),  # 33, 67, 133 ms at 30 Hz
    # the static camera moved x cm and turned x * CAMERA_DEG_PER_CM degrees (its field of view is 10 degrees:
    # 1 degree moves the picture by 20 of its 200 pixels)
    Axis("camera", "visual", "cm", (1, 2, 4)),
    Axis("image_noise", "visual", "std (0-255)", (4, 8, 16)),
    Axis("blur", "visual", "px sigma", (0.75, 1.5, 3.0)),
    # 1: a held-out paraphrase, 2: + word order changed, 3: + typos (harness/tasks/paraphrases.py)
    Axis("language", "language", "", (1, 2, 3)),
    Axis("start_pose", "robot", "rad per joint (max)", (0.1, 0.2, 0.3)),
    # the blocks' lateral friction and mass scaled (built-in scene); new axes go last: the order names the seed streams
    Axis("friction", "dynamics", "x block friction", (0.6, 0.4, 0.2)),
    Axis("mass", "dynamics", "x block mass", (2, 4, 8)),
    # scene axes (built-in scene; harness/envs/scene_axes.py, harness/sim/distractors.py)
    Axis("distractors", "scene", "object(s)", (1, 2, 4)),
    Axis("block_colors", "scene", "", (1, 2, 3)),  # COLOR_PERMUTATIONS[level]
    Axis("block_position", "scene", "cm off the slot", (2, 4, 8)),
    # the door's, drawer's, button's and switch's joints (built-in scene): friction (and the button's spring),
    # the door's and drawer's mass, joint damping
    Axis("furniture_friction", "dynamics", "x furniture friction", (2, 4, 8)),
    Axis("furniture_mass", "dynamics", "x door and drawer mass", (2, 4, 8)),
    Axis("furniture_damping", "dynamics", "N s/m furniture damping", (5, 10, 20)),
)}
# The scene's appearance (built-in scene; harness/sim/appearance.py), drawn once per chain. light: the light
# turned by x degrees about a random axis and its intensity scaled by up to +-x * LIGHT_INTENSITY_PER_DEG;
# color: each furniture part's colour mixed with a random colour by this fraction; texture: a procedural
# texture of this contrast on the furniture
AXES.update({a.name: a for a in (
    Axis("light", "visual", "deg", (15, 30, 60)),
    Axis("color", "visual", "random colour", (0.25, 0.5, 1.0)),
    Axis("texture", "visual", "contrast", (0.25, 0.5, 1.0)),
)})
LIGHT_INTENSITY_PER_DEG = 0.005  # 15 deg: +-7.5 %, 60 deg: +-30 %
APPEARANCE_AXES = ("light", "color", "texture")
LANGUAGE_LEVEL_NAMES = ("none", "paraphrase", "paraphrase + word order", "paraphrase + word order + typos")
CAMERA_DEG_PER_CM = 0.25
ENV_AXES = ("action_noise", "camera", "image_noise", "blur", "start_pose", *APPEARANCE_AXES,  # the env's random draws, per chain
            "distractors", "block_position")
FURNITURE_AXES = ("furniture_friction", "furniture_mass", "furniture_damping")
ROLLOUT_AXES = ("latency", "language")  # applied by the evaluation's rollout, not by the env
SCENE_LOOK_AXES = ("distractors", "block_colors")  # scene axes a picture shows that the recorded states do not


@dataclass(frozen=True)
class Perturbations:
    """env.perturb.*: a level per axis, 0 (unperturbed) .. 3."""

    action_noise: int = 0
    latency: int = 0
    camera: int = 0
    image_noise: int = 0
    blur: int = 0
    language: int = 0
    start_pose: int = 0
    friction: int = 0
    mass: int = 0
    distractors: int = 0
    block_colors: int = 0
    block_position: int = 0
    furniture_friction: int = 0
    furniture_mass: int = 0
    furniture_damping: int = 0
    light: int = 0
    color: int = 0
    texture: int = 0

    def __post_init__(self) -> None:
        for f in fields(self):
            level = getattr(self, f.name)
            if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= LEVELS:
                raise ValueError(f"env.perturb.{f.name}: a level 0..{LEVELS} (0 = unperturbed), got {level!r}")

    def any(self) -> bool:
        return any(self.levels().values())

    def levels(self) -> dict[str, int]:
        return asdict(self)

    def active(self) -> dict[str, int]:
        """The axes that are on, with their levels (what results.json records)."""
        return {k: v for k, v in self.levels().items() if v}

    def describe(self) -> dict[str, dict[str, Any]]:
        """The axes that are on: level, the amount it stands for, and its unit."""
        return {name: {"level": level, "amount": level_name(name, level)} for name, level in self.active().items()}


def level_name(axis: str, level: int) -> str:
    if axis == "language":
        return LANGUAGE_LEVEL_NAMES[level]
    if axis == "block_colors":
        return COLOR_LEVEL_NAMES[level]
    if axis == "camera" and level:
        return f"{AXES['camera'].value(level):g} cm, {AXES['camera'].value(level) * CAMERA_DEG_PER_CM:g} deg"
    if axis == "light" and level:
        return f"{AXES['light'].value(level):g} deg, +-{AXES['light'].value(level) * LIGHT_INTENSITY_PER_DEG:.1%} intensity"
    if axis in ("color", "texture") and level:
        return f"{AXES[axis].value(level):.0%} {AXES[axis].unit}"
    return AXES[axis].level_name(level)


# These axes' streams are named by their place in this list (their place in AXES when they were measured);
# every later axis's by its name (crc32), so that axes added side by side never shift each other's draws,
# whatever order they are listed in.
PLACE_NAMED_STREAMS = ("action_noise", "latency", "camera", "image_noise", "blur", "language", "start_pose",
                       "friction", "mass", "light", "color", "texture")


def axis_rng(seed: int, axis: str) -> np.random.Generator:
    """The random stream of `axis` for the chain seeded `seed` (independent of every other axis)."""
    if axis in PLACE_NAMED_STREAMS:
        stream = [PLACE_NAMED_STREAMS.index(axis)]
    else:
        stream = [len(PLACE_NAMED_STREAMS), zlib.crc32(axis.encode())]
    return np.random.default_rng(np.random.SeedSequence([int(seed) % 2**63, *stream]))


def add_image_noise(rgb: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    noisy = rgb.astype(np.float32) + rng.normal(0.0, std, rgb.shape).astype(np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def gaussian_blur(rgb: np.ndarray, sigma: float) -> np.ndarray:
    """A separable Gaussian blur (kernel to 3 sigma, edges repeated), per channel."""
    radius = max(1, int(np.ceil(3 * sigma)))
    x = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    kernel /= kernel.sum()
    image = rgb.astype(np.float32)
    for axis in (0, 1):
        padded = np.pad(image, [(radius, radius) if a == axis else (0, 0) for a in range(3)], mode="edge")
        image = sum(w * np.take(padded, np.arange(k, k + image.shape[axis]), axis=axis) for k, w in enumerate(kernel))
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


class PerturbedEnv:
    """An env (any backend) with the env-side axes of `perturbations` applied; everything else passes through."""

    def __init__(self, env: Env, perturbations: Perturbations) -> None:
        self.env, self.perturbations = env, perturbations
        try:  # an axis the backend cannot take, or a scene with no room for it, leaves no env open
            check_backend_supports(env, perturbations)
            if perturbations.friction or perturbations.mass:
                env.scale_block_dynamics(friction=AXES["friction"].value(perturbations.friction) or 1.0,
                                         mass=AXES["mass"].value(perturbations.mass) or 1.0)
            apply_fixed_axes(env, perturbations)
            self.description = replace(env.description, perturbations=perturbations.describe())
            self.new_chain(0)
        except BaseException:
            env.close()
            raise
        self.start_pending = False  # only a chain's start is moved, never a state restored for a video

    def new_chain(self, seed: int) -> None:
        """Draw this chain's perturbations: the rollout calls it with the chain's seed before its reset."""
        self.rngs = {axis: axis_rng(seed, axis) for axis in ENV_AXES}
        self.start_pending = True
        if self.perturbations.camera:
            amount = AXES["camera"].value(self.perturbations.camera)
            self.env.set_static_view(*_static_pose(self.rngs["camera"], amount))
        if self.perturbations.distractors:
            count = int(AXES["distractors"].value(self.perturbations.distractors))
            self.env.set_distractor_poses(place_distractors(self.description.layout(), count, self.rngs["distractors"]))
        if any(getattr(self.perturbations, a) for a in APPEARANCE_AXES):
            self.env.set_appearance(self._appearance())

    def reset(self, robot_obs: np.ndarray | None = None, scene_obs: np.ndarray | None = None) -> dict[str, Any]:
        """The chain's start (the first reset after new_chain) with the arm moved off its pose; later resets
        (a video restoring recorded states) are exact."""
        if self.perturbations.start_pose and self.start_pending and robot_obs is not None:
            robot_obs = np.array(robot_obs, dtype=np.float64)
            bound = AXES["start_pose"].value(self.perturbations.start_pose)
            robot_obs[7:14] += self.rngs["start_pose"].uniform(-bound, bound, 7)
        if self.perturbations.block_position and self.start_pending and scene_obs is not None:
            distance = AXES["block_position"].value(self.perturbations.block_position) / 100.0
            scene_obs = shift_table_blocks(scene_obs, self.description.layout(), distance, self.rngs["block_position"])
        self.start_pending = False
        return self._observed(self.env.reset(robot_obs=robot_obs, scene_obs=scene_obs))

    def step(self, action: Any) -> tuple[dict[str, Any], float, bool, dict[str, Any]]:
        if self.perturbations.action_noise:
            action = self._noisy(action)
        self.executed_action = action  # what the env was given (the recorder's target pose follows it)
        obs, reward, done, info = self.env.step(action)
        return self._observed(obs), reward, done, info

    def get_obs(self) -> dict[str, Any]:
        return self._observed(self.env.get_obs())

    def get_info(self) -> dict[str, Any]:
        return self.env.get_info()

    def close(self) -> None:
        self.env.close()

    def __getattr__(self, name: str) -> Any:  # get_state_obs, the backend's own extras
        try:
            env = self.__dict__["env"]
        except KeyError:  # not set up (copy, pickle): what hasattr and they expect
            raise AttributeError(name) from None
        return getattr(env, name)

    def _noisy(self, action: Any) -> Any:
        """Noise of `std` in the action's units: relative arm values as they are; absolute actions in the
        relative action's scale (0.02 m, 0.05 rad per unit; docs/CALVIN.md#actions)."""
        std = AXES["action_noise"].value(self.perturbations.action_noise)
        rng, parsed = self.rngs["action_noise"], parse_action(action)
        if isinstance(parsed, RelativeAction):
            values = parsed.values.copy()
            values[:6] += rng.normal(0.0, std, 6)
            return values
        assert isinstance(parsed, AbsoluteAction)
        pos = parsed.pos + rng.normal(0.0, std * 0.02, 3)
        turn = rng.normal(0.0, std * 0.05, 3)
        if parsed.orn.shape[0] == 3:
            return (pos, parsed.orn + turn, parsed.gripper)
        # a quaternion gets the same noise on its euler angles (it had position noise only: a weaker axis)
        return (pos, euler_to_quat(quat_to_euler(parsed.orn) + turn), parsed.gripper)

    def _observed(self, obs: dict[str, Any]) -> dict[str, Any]:
        noise, blur = self.perturbations.image_noise, self.perturbations.blur
        if not (noise or blur) or not obs.get("rgb_obs"):
            return obs
        rgb = {}
        for name, image in obs["rgb_obs"].items():
            if blur:
                image = gaussian_blur(image, AXES["blur"].value(blur))
            if noise:
                image = add_image_noise(image, AXES["image_noise"].value(noise), self.rngs["image_noise"])
            rgb[name] = image
        return {**obs, "rgb_obs": rgb}


    def _appearance(self) -> Any:
        """This chain's light, colours and texture (None where the axis is off)."""
        from harness.sim.appearance import Appearance, draw_colors, draw_light, draw_texture  # pybullet

        p = self.perturbations
        light, color, texture = (AXES[a].value(getattr(p, a)) for a in APPEARANCE_AXES)
        return Appearance(
            light=draw_light(self.rngs["light"], light, light * LIGHT_INTENSITY_PER_DEG) if light else None,
            colors=draw_colors(self.rngs["color"], color) if color else None,
            texture=draw_texture(self.rngs["texture"], texture) if texture else None,
        )


# The env method each env-side axis needs: a backend without it cannot take the axis.
BACKEND_METHODS = {"camera": "set_static_view", **{axis: "set_appearance" for axis in APPEARANCE_AXES},
                   "friction": "scale_block_dynamics", "mass": "scale_block_dynamics",
                   "block_colors": "permute_block_colors", "distractors": "add_distractors",
                   **{axis: "set_furniture_dynamics" for axis in FURNITURE_AXES}}


def check_backend_supports(env: Env, perturbations: Perturbations) -> None:
    """An error naming the first axis on that `env`'s backend cannot apply."""
    levels = perturbations.levels()
    for axis, method in BACKEND_METHODS.items():
        if levels[axis] and not hasattr(env, method):
            raise ValueError(f"env.perturb.{axis}: the {env.description.backend} backend does not support this "
                             "axis; it needs the built-in scene (env.backend=builtin)")


def apply_fixed_axes(env: Env, perturbations: Perturbations) -> None:
    """The axes that change the scene once, when the env is built: block colours, the distractors' bodies and
    the furniture's dynamics (built-in scene; check_backend_supports first)."""
    levels = perturbations.levels()
    if perturbations.block_colors:
        env.permute_block_colors(COLOR_PERMUTATIONS[perturbations.block_colors])
    if perturbations.distractors:
        env.add_distractors(DISTRACTORS[:int(AXES["distractors"].value(perturbations.distractors))])
    if any(levels[axis] for axis in FURNITURE_AXES):
        env.set_furniture_dynamics(friction=AXES["furniture_friction"].value(perturbations.furniture_friction) or 1.0,
                                   mass=AXES["furniture_mass"].value(perturbations.furniture_mass) or 1.0,
                                   damping=AXES["furniture_damping"].value(perturbations.furniture_damping))


def _static_pose(rng: np.random.Generator, amount: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from harness.sim.cameras import jittered_static_pose  # pybullet: only where the camera axis is used

    return jittered_static_pose(rng, amount / 100.0, amount * CAMERA_DEG_PER_CM)


def perturbed(env: Env, perturbations: Perturbations) -> Env:
    """`env` with the perturbations' env-side axes applied; the env itself when every level is 0."""
    return PerturbedEnv(env, perturbations) if perturbations.any() else env
