"""The measured geometry of CALVIN's play table in scenes A-D (docs/GEOMETRY.md), as data.

Pure data with no PyBullet import: the scene builder, the task oracle's symbolic view, the initial
state construction and the scripted expert all read the same numbers from here. World frame: z up,
the robot on the -y side, +y toward the cabinet, +x to the robot's right. Metres, radians.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

CAMERA_NAMES = ("static", "gripper")
BLOCK_COLORS = ("red", "blue", "pink")
BLOCK_RGBA = {"red": (1.0, 0.0, 0.0, 1.0), "blue": (0.0, 0.0, 1.0, 1.0), "pink": (1.0, 0.0, 1.0, 1.0)}
BLOCK_EXTENTS = {  # full extents at identity orientation (x, y, z)
    "small": (0.040, 0.040, 0.040),
    "middle": (0.056, 0.040, 0.040),
    "big": (0.080, 0.040, 0.040),
}

# Table body (same in every scene).
TABLE_TOP_Z = 0.44
CABINET_TOP_Z = 0.648
DRAWER_TRAVEL = 0.22
BUTTON_TRAVEL = 0.02
SWITCH_TRAVEL = 0.088
SWITCH_ON_THRESHOLD = 0.044  # bulb on while the switch joint is > this (level rule, no hysteresis)
BUTTON_PRESSED_THRESHOLD = 0.010  # the LED toggles on a step that ends with the button > this
SLOPE_AXIS = np.array([0.0, 0.5, 0.8660254037844386])  # up the 30 deg cabinet face
SLOPE_NORMAL = np.array([0.0, -0.8660254037844386, 0.5])  # outward normal of the cabinet face
BLOCK_REST_Z = {"table": 0.460, "slider": 0.461, "drawer": 0.362}

# Table links as calvin_env numbers them (PyBullet link indices of the table body).
TABLE_LINKS = {
    "base_link": -1,
    "button_link": 0,
    "switch_link": 1,
    "slide_link": 2,
    "drawer_link": 3,
    "led_link": 4,
    "light_link": 5,
    "plank_link": 6,
}

# Robot (same in every scene).
ROBOT_BASE_POS = (-0.34, -0.46, 0.24)
NEUTRAL_JOINTS = (-1.21779124, 1.03987629, 2.11978254, -2.34205014, -0.87015899, 1.64119093, 0.55344928)
NEUTRAL_TCP_POS = (0.02587, -0.23131, 0.57128)
NEUTRAL_TCP_EULER = (3.09046, -0.02908, 1.50014)
NEUTRAL_TCP_QUAT = (0.73158, 0.68112, 0.02806, 0.00879)  # xyzw
GRIPPER_MAX_WIDTH = 0.08
REL_POS_SCALE = 0.02  # metres per unit of a relative action
REL_ORN_SCALE = 0.05  # radians per unit of a relative action
ARM_JOINT_LIMITS = (  # simulator limits
    (-2.9671, 2.9671), (-1.8326, 1.8326), (-2.9671, 2.9671), (-3.1416, 0.0),
    (-2.9671, 2.9671), (-0.0873, 3.8223), (-2.9671, 2.9671),
)
IK_JOINT_LIMITS = (  # IK output is clipped to this narrower band
    (-2.8973, 2.8973), (-1.7628, 1.7628), (-2.8973, 2.8973), (-3.0718, -0.0698),
    (-2.8973, 2.8973), (-0.0175, 3.7525), (-2.8973, 2.8973),
)

# Evaluation slots (defined for scene D, valid in A). Block centres, with the digits CALVIN's
# evaluation uses (docs/GEOMETRY.md#evaluation-slots rounds them to 0.05, -0.12, 0.46 etc.).
EVAL_TABLE_SLOTS = ((0.0500000896, -0.120000177, 0.459990009), (0.229995412, -0.11999514, 0.45999001))
EVAL_SLIDER_SLOTS = {
    "slider_left": (-0.240851662, 0.0924044687, 0.460990009),
    "slider_right": (0.070341633, 0.0924044687, 0.460990009),
}


@dataclass(frozen=True)
class LinkInertial:
    mass: float
    com: tuple[float, float, float]  # centre of mass in the link frame
    inertia: tuple[float, float, float]  # principal moments (kg m^2) as calvin_env's simulator computes them


# panda_longer_finger's links as calvin_env's simulator holds them (PyBullet's getDynamicsInfo,
# docs/FIDELITY.md#2-robot): masses and centres of mass from its URDF, moments computed by PyBullet from its
# collision shapes.
ROBOT_INERTIALS = {
    "panda_link0": LinkInertial(2.9, (0.0, 0.0, 0.05), (0.0, 0.0, 0.0)),  # fixed base
    "panda_link1": LinkInertial(2.7, (0.0, -0.04, -0.05), (0.0229713, 0.0177688, 0.0114841)),
    "panda_link2": LinkInertial(2.73, (0.0, -0.04, 0.06), (0.0234909, 0.0116129, 0.0182282)),
    "panda_link3": LinkInertial(2.04, (0.01, 0.01, -0.05), (0.0109205, 0.0125805, 0.0119681)),
    "panda_link4": LinkInertial(2.08, (-0.03, 0.03, 0.02), (0.011335, 0.0122486, 0.0130568)),
    "panda_link5": LinkInertial(3.0, (0.0, 0.04, -0.12), (0.0356765, 0.029848, 0.0128022)),
    "panda_link6": LinkInertial(1.3, (0.04, 0.0, 0.0), (0.00342798, 0.00511692, 0.00598776)),
    "panda_link7": LinkInertial(0.2, (0.0, 0.0, 0.08), (0.000361607, 0.000362157, 0.000592108)),
    "panda_link8": LinkInertial(0.0, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0)),
    "panda_hand": LinkInertial(0.81, (0.0, 0.0, 0.04), (0.00371911, 0.00101616, 0.00338832)),
    "panda_leftfinger": LinkInertial(0.1, (0.0, 0.01, 0.02), (9.84538e-05, 9.73962e-05, 1.50491e-05)),
    "finger_left_tip": LinkInertial(0.0001, (0.0, 0.0, 0.0), (1.2989e-08, 8.85208e-09, 5.82626e-09)),
    "panda_rightfinger": LinkInertial(0.1, (0.0, -0.01, 0.02), (9.84538e-05, 9.73962e-05, 1.50491e-05)),
    "finger_right_tip": LinkInertial(0.0001, (0.0, 0.0, 0.0), (1.2989e-08, 8.85208e-09, 5.82626e-09)),
    "panda_grasptarget": LinkInertial(0.0, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0)),
    "gripper_cam": LinkInertial(0.2, (0.0, 0.0, 0.0), (1.33333e-07, 1.33333e-07, 1.33333e-07)),
    "tcp": LinkInertial(1e-05, (0.0, 0.0, 0.0), (6.66667e-12, 6.66667e-12, 6.66667e-12)),
}
# The gripper in the hand frame (z = approach; TCP at z 0.14), as panda_longer_finger builds it.
FINGER_JOINT_Z = 0.0584  # both finger joints' origin; the fingers slide along +-y
GRASP_TARGET_Z = 0.105
GRIPPER_CAM_ORIGIN = ((-0.1, 0.0, 0.0), (1.3, 0.0, -1.57))  # xyz, rpy (its 8 x 2.5 x 1 cm white box)
GRIPPER_CAM_BOX = (0.08, 0.025, 0.01)
# The gel tip on each finger: (xyz, yaw) of its frame in the left finger's frame; the right is mirrored.
GEL_TIP_ORIGIN = ((0.0009, 0.021, 0.066), -1.57)
# The left finger's collision hull as sections across its length, in the finger frame (y = toward
# the outside; the fingers' inner faces meet at y = 0 when closed): (z, half width along x, inner y,
# outer y). A 21 mm thick root tapering to a 3 mm blade over the last 30 mm.
FINGER_SECTIONS = (
    (0.0002, 0.0104, 0.0062, 0.0270),
    (0.0342, 0.0104, 0.0050, 0.0216),
    (0.0647, 0.0094, 0.0040, 0.0143),
    (0.0905, 0.0087, 0.0039, 0.0082),
    (0.0963, 0.0058, 0.0039, 0.0068),
)
# The gel pad (a DIGIT gel) in its own frame: a dome on a flat base at x 0.0161, its apex toward the
# other finger at x 0.0201; sections along z: (z, half width along y, apex x).
GEL_SECTIONS = (
    (0.0047, 0.0092, 0.0187),
    (0.0083, 0.0092, 0.0197),
    (0.0119, 0.0092, 0.0201),
    (0.0190, 0.0092, 0.0201),
    (0.0226, 0.0092, 0.0200),
    (0.0262, 0.0082, 0.0196),
    (0.0297, 0.0048, 0.0186),
)
GEL_BASE_X = 0.0161

# The robot_obs (15 values) CALVIN's evaluation starts every chain from: TCP pose, gripper width, arm
# joints, gripper action (the default reset of panda_longer_finger).
NEUTRAL_ROBOT_OBS = np.array(
    [0.02586889, -0.2313129, 0.5712808, 3.09045411, -0.02908596, 1.50013585, 0.07999963, *NEUTRAL_JOINTS, 1.0],
    dtype=np.float64,
)


@dataclass(frozen=True)
class SceneLayout:
    """Everything that differs between scenes A-D."""

    name: str
    bay: tuple[float, float]  # x range of the open cabinet bay (plank, door)
    drawer_x: float
    button_x: float  # the LED shares this x
    switch_x: float  # the bulb shares this x
    door_origin_x: float  # slide_link origin x at q = 0
    door_travel: float  # base__slide upper limit
    block_sizes: dict[str, str]  # colour -> "small" | "middle" | "big"
    block_order: tuple[str, ...]  # colours in scene_obs[6:24] order
    wood_body: tuple[int, int, int]  # mean texel RGB 0-255
    wood_door: tuple[int, int, int]
    wood_plank: tuple[int, int, int]
    sample_table: tuple[tuple[float, float], tuple[float, float]]  # (x range, y range), z 0.46
    sample_slider_left: tuple[tuple[float, float], tuple[float, float]]
    sample_slider_right: tuple[tuple[float, float], tuple[float, float]]
    light_mass: float = 0.174

    @property
    def led_x(self) -> float:
        return self.button_x

    @property
    def bulb_x(self) -> float:
        return self.switch_x

    @property
    def bay_center_x(self) -> float:
        return 0.5 * (self.bay[0] + self.bay[1])

    def block_extents(self, color: str) -> tuple[float, float, float]:
        return BLOCK_EXTENTS[self.block_sizes[color]]

    def recolored(self, permutation: dict[str, str]) -> "SceneLayout":
        """The layout once the block that was colour c is colour permutation[c] (the block colour axis): each
        colour takes the size of the block that now has it."""
        sizes = dict(self.block_sizes)
        for old, new in permutation.items():
            sizes[new] = self.block_sizes[old]
        return replace(self, block_sizes=sizes)

    def block_obs_slice(self, color: str) -> slice:
        """Where a block's xyz + euler sit in scene_obs."""
        i = self.block_order.index(color)
        return slice(6 + 6 * i, 12 + 6 * i)

    def scene_obs_by_color(self, scene_obs: np.ndarray) -> np.ndarray:
        """scene_obs (..., 24) with the blocks' xyz + euler in BLOCK_COLORS order (scene D's) instead of this
        scene's: the same slot is the same block in every scene (a learning target must not change meaning
        between A, B, C and D)."""
        blocks = [scene_obs[..., self.block_obs_slice(color)] for color in BLOCK_COLORS]
        return np.concatenate([scene_obs[..., :6], *blocks], axis=-1)

    def door_x_range(self, q: float) -> tuple[float, float]:
        """x extent of the sliding door panel at joint value q (it moves along -x)."""
        return (self.door_origin_x - 0.001 - q, self.door_origin_x + 0.281 - q)


SCENES: dict[str, SceneLayout] = {
    "A": SceneLayout(
        name="A", bay=(-0.36, 0.16), drawer_x=0.10, button_x=-0.28, switch_x=0.30,
        door_origin_x=-0.100, door_travel=0.28,
        block_sizes={"red": "middle", "blue": "big", "pink": "small"}, block_order=("pink", "blue", "red"),
        wood_body=(125, 72, 48), wood_door=(117, 68, 45), wood_plank=(121, 70, 47),
        sample_table=((-0.20, 0.35), (-0.15, -0.03)),
        sample_slider_left=((-0.32, -0.16), (0.05, 0.12)), sample_slider_right=((-0.05, 0.13), (0.05, 0.12)),
    ),
    "B": SceneLayout(
        name="B", bay=(-0.18, 0.34), drawer_x=0.18, button_x=0.28, switch_x=-0.32,
        door_origin_x=0.088, door_travel=0.304,
        block_sizes={"red": "small", "blue": "big", "pink": "middle"}, block_order=("red", "blue", "pink"),
        wood_body=(245, 196, 139), wood_door=(245, 198, 141), wood_plank=(240, 196, 141),
        sample_table=((-0.35, 0.15), (-0.15, -0.03)),
        sample_slider_left=((-0.12, 0.06), (0.05, 0.12)), sample_slider_right=((0.15, 0.33), (0.05, 0.12)),
        light_mass=0.115,
    ),
    "C": SceneLayout(
        name="C", bay=(-0.18, 0.34), drawer_x=0.10, button_x=-0.12, switch_x=-0.32,
        door_origin_x=0.060, door_travel=0.24,
        block_sizes={"red": "big", "blue": "small", "pink": "middle"}, block_order=("blue", "red", "pink"),
        wood_body=(159, 108, 64), wood_door=(117, 68, 45), wood_plank=(155, 106, 63),
        sample_table=((0.00, 0.35), (-0.15, -0.03)),
        sample_slider_left=((-0.12, 0.06), (0.05, 0.12)), sample_slider_right=((0.15, 0.30), (0.05, 0.12)),
    ),
    "D": SceneLayout(
        name="D", bay=(-0.36, 0.16), drawer_x=0.18, button_x=-0.12, switch_x=0.30,
        door_origin_x=-0.100, door_travel=0.28,
        block_sizes={"red": "middle", "blue": "small", "pink": "big"}, block_order=("red", "blue", "pink"),
        wood_body=(160, 119, 79), wood_door=(160, 120, 79), wood_plank=(150, 113, 75),
        sample_table=((0.00, 0.35), (-0.15, -0.03)),
        sample_slider_left=((-0.32, -0.16), (0.05, 0.12)), sample_slider_right=((-0.05, 0.13), (0.05, 0.12)),
    ),
}


def get_layout(scene: str) -> SceneLayout:
    """The layout of scene "A".."D" (also accepts "calvin_scene_D"); ValueError names the valid scenes."""
    key = scene.removeprefix("calvin_scene_") if isinstance(scene, str) else scene
    if key not in SCENES:
        raise ValueError(f"unknown scene {scene!r}: expected one of {', '.join(SCENES)} (or calvin_scene_X)")
    return SCENES[key]


def parse_scenes(text: str | Sequence[str]) -> tuple[str, ...]:
    """"D", "ABCD", "A,B,C,D", "calvin_scene_D" or a list of these -> ("A", ...); ValueError names the valid scenes."""
    tokens = text.replace(",", " ").split() if isinstance(text, str) else list(text)
    scenes = tuple(s for token in tokens for s in token.strip().removeprefix("calvin_scene_"))
    if not scenes or any(s not in SCENES for s in scenes):
        raise ValueError(f"scenes must name some of {', '.join(SCENES)}, got {text!r}")
    return scenes
