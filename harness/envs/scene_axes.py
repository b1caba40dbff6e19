"""The scene axes of the perturbation suite (docs/ROBUSTNESS.md#scene-axes): which block colours swap, and
where blocks that start on the table go instead of CALVIN's slots. Geometry on scene_obs, no PyBullet.

Block colours follow the look: "the red block" is the block that looks red, to the instruction, the oracle,
scene_obs and the scripted expert alike; what changes is which body (which size) that is. The blocks keep
their colours' start places, so every chain stays as feasible as it was. A policy that grounds colour keeps
succeeding; one that learnt "the red block is the middle-sized one" does not.
"""

from __future__ import annotations

import numpy as np

from harness.sim.layout import BLOCK_REST_Z, SceneLayout

# level -> {colour the block had: colour it has now}
COLOR_PERMUTATIONS = (
    {},
    {"red": "blue", "blue": "red"},
    {"blue": "pink", "pink": "blue"},
    {"red": "blue", "blue": "pink", "pink": "red"},
)
COLOR_LEVEL_NAMES = ("none", "red <-> blue", "blue <-> pink", "red -> blue -> pink -> red")
BLOCK_CLEARANCE = 0.005  # m between two blocks' footprint circles, and from the button's collar
BUTTON_COLLAR_RADIUS = 0.04
BUTTON_Y = -0.12  # the button's centre on the table top, every scene (docs/GEOMETRY.md)
ON_TABLE_DZ = 0.002  # a block within this of the table's rest height, in front of the cabinet, is on the table
SHIFT_TRIES = 200


def footprint_radius(layout: SceneLayout, color: str) -> float:
    """Half the diagonal of a block's footprint: it covers the block at any yaw."""
    x, y, _ = layout.block_extents(color)
    return 0.5 * float(np.hypot(x, y))


def on_table(scene_obs: np.ndarray, layout: SceneLayout, color: str) -> bool:
    pos = scene_obs[layout.block_obs_slice(color)][:3]
    return abs(pos[2] - BLOCK_REST_Z["table"]) < ON_TABLE_DZ and pos[1] < 0.0


def shift_table_blocks(scene_obs: np.ndarray, layout: SceneLayout, distance: float, rng: np.random.Generator
                       ) -> np.ndarray:
    """scene_obs with every block that starts on the table moved `distance` metres in a random direction,
    to a place CALVIN's own random reset could start it from: inside the table region it samples blocks from,
    clear of the other blocks and the button. A ValueError when a block has no such place at that distance."""
    scene_obs = np.array(scene_obs, dtype=np.float64)
    (x0, x1), (y0, y1) = layout.sample_table
    for color in layout.block_order:
        if not on_table(scene_obs, layout, color):
            continue
        sl = layout.block_obs_slice(color)
        start = scene_obs[sl][:2].copy()
        for _ in range(SHIFT_TRIES):
            angle = rng.uniform(-np.pi, np.pi)
            xy = start + distance * np.array([np.cos(angle), np.sin(angle)])
            if x0 <= xy[0] <= x1 and y0 <= xy[1] <= y1 and _clear(scene_obs, layout, color, xy):
                scene_obs[sl.start:sl.start + 2] = xy
                break
        else:
            raise ValueError(f"env.perturb.block_position: no place {distance * 100:g} cm from the {color} block's "
                             f"start {start.round(3).tolist()} inside scene {layout.name}'s table region")
    return scene_obs


def _clear(scene_obs: np.ndarray, layout: SceneLayout, color: str, xy: np.ndarray) -> bool:
    radius = footprint_radius(layout, color)
    if np.hypot(*(xy - (layout.button_x, BUTTON_Y))) < radius + BUTTON_COLLAR_RADIUS + BLOCK_CLEARANCE:
        return False
    for other in layout.block_order:
        if other != color:
            gap = np.hypot(*(xy - scene_obs[layout.block_obs_slice(other)][:2]))
            if gap < radius + footprint_radius(layout, other) + BLOCK_CLEARANCE:
                return False
    return True
