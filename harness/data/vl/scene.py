"""Scene states for vision-language data: sampled, set by hand, settled, and read back as facts.

A state is a `scene_obs` (24 values) built here and restored exactly with `env.reset(PARKED_ROBOT_OBS,
scene_obs)`; a few env steps let the blocks settle, with the arm parked outside the static camera's view
so that nothing hides the table. Every answer is then read off the *settled simulator*, never off what
the sampler meant to build: `read_facts(info, depth, layout)` turns `env.get_info()` and the static
camera's depth image into `SceneFacts`.

* Furniture and lights: `harness.tasks.symbolic_state` (drawer open past half its travel, sliding door
  "left" past half the door's travel, the LED and bulb logical states).
* Where a block is (`BlockFacts.place`): "table", "drawer", "slider_left", "slider_right", or "on_<colour>"
  for a block stacked on another. The symbolic state gives the first four; for a stack, the block on
  top names the block below it, and the block below is placed by the same contact rules with the stack
  contact taken away (a stack on the table: the bottom block is "table").
* What the camera sees (`visible_pixels`): the static camera's depth image is back-projected to world
  points, and a pixel belongs to a block when its point lies inside the block's box (+3 mm). A block
  behind the sliding door or under the table top has few or no pixels; questions about blocks ask
  only about visible ones (`MIN_VISIBLE_PIXELS`).
* Image position (`u`, `v`): the block centre projected with the static camera (u to the right, v down,
  pixels of the 200x200 image). "Left of" in questions means a smaller u.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Mapping, Sequence

import numpy as np

from harness import spatial
from harness.sim.cameras import DEFAULT_SPECS, STATIC_EYE, STATIC_TARGET, STATIC_UP
from harness.sim.layout import (
    BLOCK_COLORS,
    BLOCK_REST_Z,
    DRAWER_TRAVEL,
    NEUTRAL_ROBOT_OBS,
    SWITCH_TRAVEL,
    SceneLayout,
)
from harness.tasks import initial_conditions, initial_state, symbolic_state
from harness.tasks.info import InfoView, block_name
from harness.tasks.symbolic import STACK_DZ, block_symbol

# Arm joints that swing the Panda out of the static camera's view (base joint turned toward the robot's
# left): the whole table is unoccluded.
PARK_JOINTS = (-2.6, 0.2, 2.1, -2.3, -0.9, 1.6, 0.55)
PARKED_ROBOT_OBS = np.concatenate([NEUTRAL_ROBOT_OBS[:7], PARK_JOINTS, NEUTRAL_ROBOT_OBS[14:]])
HOLD_ACTION = np.array([0, 0, 0, 0, 0, 0, 1.0])  # relative: keep the arm where it is, gripper open
SETTLE_STEPS = 10  # env steps (1/30 s each) after setting a state
SETTLED_SPEED = 0.02  # m/s and rad/s: blocks slower than this count as at rest
MIN_VISIBLE_PIXELS = 25  # a fully visible small block covers ~150 pixels of the 200x200 image
INSIDE_TOLERANCE = 0.003  # m around a block's box when assigning back-projected pixels to it

# Joint values sampled away from the symbolic thresholds (half travel), so that the picture is not
# ambiguous: "closed" 0-30 % of the travel, "open" 70-100 %.
CLOSED_RANGE, OPEN_RANGE = (0.0, 0.3), (0.7, 1.0)
SWITCH_OFF_RANGE, SWITCH_ON_RANGE = (0.0, 0.35), (0.65, 1.0)  # fractions of SWITCH_TRAVEL
# Ranges of block centres (x range, y range). The sliding cabinet's are calvin_env's (per scene); the
# table's cover its whole free top in front of the cabinet (calvin_env uses part of it); the drawer's
# are the part of an open drawer in front of the table top slab (which ends at y = -0.18 and hides what
# is under it), 4.5 cm (a big block's half diagonal) from the drawer's walls.
TABLE_CENTRES = ((-0.36, 0.36), (-0.14, -0.04))
BUTTON_Y, BUTTON_RADIUS = -0.12, 0.04
DRAWER_INNER_HALF_WIDTH, DRAWER_FRONT_Y, SLAB_EDGE_Y, WALL_MARGIN = 0.176, -0.156, -0.18, 0.045
# Places drawn for a block in the hand-set (non-CALVIN) states, with weights; impossible ones are skipped.
PLACE_WEIGHTS = {"table": 0.4, "slider": 0.25, "drawer": 0.15, "stack": 0.2}
UNCOVERED_SIDE = 0.75  # chance that a block put in the sliding cabinet goes to the side the door leaves open
CALVIN_CONDITION_FRACTION = 0.3  # share of states that are CALVIN evaluation start conditions
CALVIN_CONDITIONS = initial_conditions()  # the 192, in product order: a state's `condition` indexes this
MAX_PLACEMENT_TRIES = 200


@dataclass(frozen=True)
class BlockFacts:
    color: str
    place: str  # table | drawer | slider_left | slider_right | on_<colour> | grasped
    visible_pixels: int
    u: float  # projected centre, pixels from the left edge
    v: float  # pixels from the top edge
    pos: tuple[float, float, float]

    @property
    def visible(self) -> bool:
        return self.visible_pixels >= MIN_VISIBLE_PIXELS


@dataclass(frozen=True)
class SceneFacts:
    """What the answers are computed from (read off the settled simulator)."""

    scene: str
    drawer_open: bool
    door: str  # "left" | "right"
    led: bool  # the green light
    bulb: bool  # the yellow light
    blocks: dict[str, BlockFacts]  # colour -> facts, in BLOCK_COLORS order

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SceneFacts":
        blocks = {c: BlockFacts(**{**b, "pos": tuple(b["pos"])}) for c, b in d["blocks"].items()}
        return cls(**{**d, "blocks": blocks})


# --------------------------------------------------------------------------------------- reading facts


def static_camera_matrices() -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(view, projection) of the static camera, column-major as PyBullet's (pure numpy)."""
    spec = DEFAULT_SPECS["static"]
    return (spatial.view_matrix(STATIC_EYE, STATIC_TARGET, STATIC_UP),
            spatial.projection_matrix(spec.fov, 1.0, spec.near, spec.far))


def block_masks(info: Mapping[str, Any], depth: np.ndarray, layout: SceneLayout) -> dict[str, np.ndarray]:
    """Per block colour, bool (H, W): the pixels of the static depth image whose back-projected point
    lies inside the block's box (what the camera sees of the block)."""
    h, w = depth.shape
    view, proj = static_camera_matrices()
    jj, ii = np.mgrid[0:h, 0:w]
    uv = np.stack([ii.ravel() + 0.5, jj.ravel() + 0.5], axis=1)
    points = spatial.pixel_to_world(uv, depth.ravel(), view, proj, w, h)
    masks = {}
    movable = info["scene_info"]["movable_objects"]
    for color in BLOCK_COLORS:
        obj = movable[block_name(color)]
        rot = spatial.quat_to_matrix(obj["current_orn"])
        local = (points - np.asarray(obj["current_pos"])) @ rot  # rows: R^T (p - c)
        half = np.asarray(layout.block_extents(color)) / 2 + INSIDE_TOLERANCE
        masks[color] = np.all(np.abs(local) <= half, axis=1).reshape(h, w)
    return masks


def _without_block_contacts(info: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The info with the contacts between block `name` and the other blocks taken away."""
    movable = info["scene_info"]["movable_objects"]
    block_uids = {int(o["uid"]) for o in movable.values()}
    own = {**movable[name], "contacts": [c for c in movable[name]["contacts"] if int(c[2]) not in block_uids]}
    return {**info, "scene_info": {**info["scene_info"], "movable_objects": {**movable, name: own}}}


def block_places(info: Mapping[str, Any], layout: SceneLayout) -> dict[str, str]:
    """colour -> table | drawer | slider_left | slider_right | on_<colour> | grasped (see the module doc)."""
    view = InfoView(info)
    state = symbolic_state(view, layout).as_dict()
    places = {}
    for color in BLOCK_COLORS:
        symbol = state[f"{color}_block"]
        block = view.block(block_name(color))
        if symbol == "stacked_top":
            below = [c for c in BLOCK_COLORS if c != color and view.block(block_name(c)).uid in block.contact_uids
                     and block.pos[2] - view.block(block_name(c)).pos[2] >= STACK_DZ]
            places[color] = f"on_{below[0]}"
        elif symbol == "stacked_bottom":
            places[color] = block_symbol(InfoView(_without_block_contacts(info, block_name(color))),
                                         block_name(color), layout)
        else:
            places[color] = symbol
    return places


def read_facts(info: Mapping[str, Any], depth: np.ndarray, layout: SceneLayout) -> SceneFacts:
    """The facts of a settled scene from `env.get_info()` and the static camera's metric depth (H, W)."""
    state = symbolic_state(info, layout)
    places = block_places(info, layout)
    pixels = {c: int(m.sum()) for c, m in block_masks(info, depth, layout).items()}
    view, proj = static_camera_matrices()
    h, w = depth.shape
    blocks = {}
    for color in BLOCK_COLORS:
        pos = tuple(float(v) for v in info["scene_info"]["movable_objects"][block_name(color)]["current_pos"])
        u, v = spatial.project_points(np.array(pos), view, proj, w, h)[0]
        blocks[color] = BlockFacts(color, places[color], pixels[color], round(float(u), 2), round(float(v), 2), pos)
    return SceneFacts(layout.name, state.drawer == "open", state.slider, bool(state.led), bool(state.lightbulb), blocks)


# --------------------------------------------------------------------------------------- sampling states


@dataclass(frozen=True)
class PlannedState:
    """A scene_obs and the places its blocks were put (to check the settled scene against)."""

    scene_obs: np.ndarray
    places: dict[str, str]
    source: str  # "calvin_condition" | "random"
    condition: int | None = None  # the CALVIN start condition's index in initial_conditions()


def _in_range(rng: np.random.Generator, lo: float, hi: float, fractions: tuple[float, float]) -> float:
    return lo + (hi - lo) * rng.uniform(*fractions)


def _half_diagonal(layout: SceneLayout, color: str) -> float:
    x, y, _ = layout.block_extents(color)
    return 0.5 * float(np.hypot(x, y))


def sample_furniture(rng: np.random.Generator, layout: SceneLayout) -> np.ndarray:
    """scene_obs[0:6]: door, drawer, button, switch, bulb, LED; joints away from the thresholds, the
    switch consistent with the bulb (the light logic would otherwise switch it on the first step)."""
    door = _in_range(rng, 0, layout.door_travel, OPEN_RANGE if rng.random() < 0.5 else CLOSED_RANGE)
    drawer = _in_range(rng, 0, DRAWER_TRAVEL, OPEN_RANGE if rng.random() < 0.5 else CLOSED_RANGE)
    bulb, led = int(rng.random() < 0.5), int(rng.random() < 0.5)
    switch = _in_range(rng, 0, SWITCH_TRAVEL, SWITCH_ON_RANGE if bulb else SWITCH_OFF_RANGE)
    return np.array([door, drawer, 0.0, switch, bulb, led])


def _areas(layout: SceneLayout, drawer_q: float) -> dict[str, tuple[tuple[float, float], tuple[float, float]]]:
    """Ranges of block centres per place; the drawer only when it is open far enough to show a block."""
    areas = {"table": TABLE_CENTRES, "slider_left": layout.sample_slider_left, "slider_right": layout.sample_slider_right}
    y0, y1 = DRAWER_FRONT_Y - drawer_q + WALL_MARGIN, SLAB_EDGE_Y - 0.01
    if y1 > y0:
        half = DRAWER_INNER_HALF_WIDTH - WALL_MARGIN
        areas["drawer"] = ((layout.drawer_x - half, layout.drawer_x + half), (y0, y1))
    return areas


def _free_spot(rng: np.random.Generator, area, radius: float, taken: list[tuple[float, float, float]],
               avoid: list[tuple[float, float, float]]) -> tuple[float, float] | None:
    """A centre in the area whose disc (the block's half diagonal) is clear of taken blocks and `avoid` discs."""
    (x0, x1), (y0, y1) = area
    for _ in range(50):
        x, y = rng.uniform(x0, x1), rng.uniform(y0, y1)
        if all(np.hypot(x - tx, y - ty) > r + radius + 0.005 for tx, ty, r in taken + avoid):
            return x, y
    return None


def _slider_side(rng: np.random.Generator, door_left: bool) -> str:
    """The door hides the side it is pushed to; a block goes mostly to the other (visible) side."""
    uncovered, covered = ("slider_right", "slider_left") if door_left else ("slider_left", "slider_right")
    return uncovered if rng.random() < UNCOVERED_SIDE else covered


def sample_random_state(rng: np.random.Generator, layout: SceneLayout) -> PlannedState:
    """Furniture and lights at random, and each block on a random place: the table, a side of the sliding
    cabinet, the open drawer (in front of the slab edge), or stacked on a block on the table."""
    for _ in range(MAX_PLACEMENT_TRIES):
        obs = np.zeros(24)
        obs[:6] = sample_furniture(rng, layout)
        areas = _areas(layout, obs[1])
        taken: dict[str, list[tuple[float, float, float]]] = {k: [] for k in areas}
        button = [(layout.button_x, BUTTON_Y, BUTTON_RADIUS)]
        places: dict[str, str] = {}
        for color in rng.permutation(BLOCK_COLORS):
            color = str(color)
            bottoms = [c for c, p in places.items() if p == "table" and f"on_{c}" not in places.values()]
            options = {"table": 1.0, "slider": 1.0, "drawer": float("drawer" in areas), "stack": float(bool(bottoms))}
            weights = np.array([PLACE_WEIGHTS[k] * options[k] for k in PLACE_WEIGHTS])
            kind = list(PLACE_WEIGHTS)[rng.choice(len(weights), p=weights / weights.sum())]
            yaw = rng.uniform(-np.pi, np.pi)
            if kind == "stack":
                below = bottoms[rng.integers(len(bottoms))]
                bx, by = obs[layout.block_obs_slice(below)][:2]
                pose = [bx + rng.normal(0, 0.003), by + rng.normal(0, 0.003), BLOCK_REST_Z["table"] + 0.04, 0, 0, yaw]
                places[color] = f"on_{below}"
            else:
                place = _slider_side(rng, obs[0] > layout.door_travel / 2) if kind == "slider" else kind
                radius = _half_diagonal(layout, color)
                spot = _free_spot(rng, areas[place], radius, taken[place], button if place == "table" else [])
                if spot is None:
                    break
                taken[place].append((*spot, radius))
                z = BLOCK_REST_Z["slider" if place.startswith("slider") else place]
                pose = [*spot, z, 0, 0, yaw]
                places[color] = place
            obs[layout.block_obs_slice(color)] = pose
        else:
            return PlannedState(obs, places, "random")
    raise RuntimeError(f"could not place the blocks in {MAX_PLACEMENT_TRIES} tries (scene {layout.name})")


def sample_calvin_state(rng: np.random.Generator, layout: SceneLayout,
                        conditions: Sequence[int] | None = None) -> PlannedState:
    """One of CALVIN's 192 evaluation start conditions (of `conditions`, indices into initial_conditions(), when
    given), built as its evaluation builds it."""
    allowed = range(len(CALVIN_CONDITIONS)) if conditions is None else conditions
    if not allowed:
        raise ValueError("sample_calvin_state: no start condition to draw from (conditions is empty)")
    index = int(allowed[int(rng.integers(len(allowed)))])
    condition = CALVIN_CONDITIONS[index]
    _, obs = initial_state(condition, layout.name)
    return PlannedState(obs, {c: condition[f"{c}_block"] for c in BLOCK_COLORS}, "calvin_condition", index)


def sample_state(rng: np.random.Generator, layout: SceneLayout, conditions: Sequence[int] | None = None) -> PlannedState:
    """A CALVIN start condition (of `conditions`, when given) with probability CALVIN_CONDITION_FRACTION, else a
    random state."""
    if rng.random() < CALVIN_CONDITION_FRACTION:
        return sample_calvin_state(rng, layout, conditions)
    return sample_random_state(rng, layout)


@dataclass
class RenderedState:
    image: np.ndarray  # uint8 (200, 200, 3), the static camera
    scene_obs: np.ndarray  # settled
    facts: SceneFacts
    source: str  # "calvin_condition" | "random" | "scene_obs" (set by hand)
    depth: np.ndarray  # float32 (200, 200), metric depth of the static camera
    condition: int | None = None  # the CALVIN start condition, for source "calvin_condition"


class SceneRenderer:
    """Sets planned states in the built-in scene, settles them and renders the static camera.

    Two envs of the scene: one without cameras settles the state (no frame is drawn while it does),
    the other is reset to the settled state and renders it once, so the picture, the info and the
    depth all come from the same simulator state."""

    def __init__(self, scene: str):
        from harness.envs import make_env

        self.physics = make_env("builtin", scene=scene, cameras=())
        self.camera = make_env("builtin", scene=scene, cameras=("static",))
        self.layout = self.physics.layout

    def settle(self, scene_obs: np.ndarray) -> RenderedState | None:
        """Set `scene_obs` with the arm parked, let it settle, render it; None if a block is still moving."""
        self.physics.reset(PARKED_ROBOT_OBS, scene_obs)
        for _ in range(SETTLE_STEPS):
            _, _, _, info = self.physics.step(HOLD_ACTION)
        view = InfoView(info)
        if any(view.block(block_name(c)).max_abs_velocity > SETTLED_SPEED for c in BLOCK_COLORS):
            return None
        settled = self.physics.get_state_obs()
        obs = self.camera.reset(settled["robot_obs"], settled["scene_obs"])
        facts = read_facts(self.camera.get_info(), obs["depth_obs"]["depth_static"], self.layout)
        return RenderedState(obs["rgb_obs"]["rgb_static"], obs["scene_obs"], facts, "scene_obs",
                             obs["depth_obs"]["depth_static"])

    def render(self, planned: PlannedState) -> RenderedState | None:
        """The settled planned state; None when the settled scene is not the planned one (a block still
        moving, or in another place than it was put): such a state is drawn again rather than kept with
        surprising answers."""
        rendered = self.settle(planned.scene_obs)
        if rendered is None or {c: b.place for c, b in rendered.facts.blocks.items()} != planned.places:
            return None
        return replace(rendered, source=planned.source, condition=planned.condition)

    def close(self) -> None:
        self.physics.close()
        self.camera.close()

    def __enter__(self) -> "SceneRenderer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
