"""Distractor objects for the perturbation suite's distractor axis (docs/ROBUSTNESS.md): what they are and
where on the table they may stand. Pure data and geometry, no PyBullet (the scene builds the bodies).

None is a cuboid or red, blue or pink, so none can be taken for a CALVIN block. They stand on the table top's
front strip, outside every place a task moves a block to or through: the table region CALVIN samples blocks
from widened by a push (0.1 m, CALVIN's threshold) and a block's half length, and the button's collar.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.sim.layout import TABLE_TOP_Z, SceneLayout

TABLE_FRONT_Y = (-0.16, -0.04)  # the strip's depth: 2 cm inside the front edge (-0.18) .. 6 cm before the cabinet
TABLE_X = (-0.42, 0.42)  # 2 cm inside the table's sides
TASK_MARGIN_X = 0.14  # a push (0.10 m) and half the longest block (0.04 m) beyond the block region
BUTTON_MARGIN = 0.07  # the button collar's radius (0.04 m) and 3 cm more
GAP = 0.01  # the least distance between two distractors' footprints


@dataclass(frozen=True)
class DistractorKind:
    name: str
    shape: str  # "cylinder" | "sphere" | "capsule" (upright)
    radius: float  # m
    length: float  # m: the cylinder's height, the capsule's straight part (0 for a sphere)
    rgba: tuple[float, float, float, float]
    mass: float  # kg

    @property
    def height(self) -> float:
        return {"cylinder": self.length, "sphere": 2 * self.radius, "capsule": self.length + 2 * self.radius}[self.shape]

    @property
    def rest_z(self) -> float:
        """Its centre's height when it stands on the table top."""
        return TABLE_TOP_Z + self.height / 2


# Level n of the axis puts the first 1, 2 or 4 of these on the table (docs/ROBUSTNESS.md).
DISTRACTORS = (
    DistractorKind("green cylinder", "cylinder", 0.022, 0.05, (0.10, 0.65, 0.20, 1.0), 0.10),
    DistractorKind("yellow ball", "sphere", 0.022, 0.0, (0.95, 0.85, 0.10, 1.0), 0.05),
    DistractorKind("white puck", "cylinder", 0.030, 0.02, (0.92, 0.92, 0.92, 1.0), 0.08),
    DistractorKind("cyan capsule", "capsule", 0.016, 0.03, (0.00, 0.75, 0.80, 1.0), 0.05),
)


def free_x_ranges(layout: SceneLayout) -> list[tuple[float, float]]:
    """The x ranges of the table's front strip that no task reaches into, in scene `layout`."""
    blocked = sorted([
        (layout.sample_table[0][0] - TASK_MARGIN_X, layout.sample_table[0][1] + TASK_MARGIN_X),
        (layout.button_x - BUTTON_MARGIN, layout.button_x + BUTTON_MARGIN),
    ])
    free, x = [], TABLE_X[0]
    for lo, hi in blocked:
        if lo > x:
            free.append((x, min(lo, TABLE_X[1])))
        x = max(x, hi)
    if x < TABLE_X[1]:
        free.append((x, TABLE_X[1]))
    return free


def place_distractors(layout: SceneLayout, count: int, rng: np.random.Generator, tries: int = 1000) -> np.ndarray:
    """(count, 3) centres for the first `count` DISTRACTORS in the free strip, no two closer than GAP; a
    ValueError names the scene when they do not fit."""
    ranges = free_x_ranges(layout)
    widths = np.array([hi - lo for lo, hi in ranges])
    kinds = DISTRACTORS[:count]
    for _ in range(tries):
        centres = []
        for kind in kinds:
            k = rng.choice(len(ranges), p=widths / widths.sum())
            lo, hi = ranges[k]
            if hi - lo < 2 * kind.radius:
                break
            x = rng.uniform(lo + kind.radius, hi - kind.radius)
            y = rng.uniform(TABLE_FRONT_Y[0] + kind.radius, TABLE_FRONT_Y[1] - kind.radius)
            centres.append((x, y, kind.rest_z))
        if len(centres) == count and _apart(centres, kinds):
            return np.array(centres)
    raise ValueError(f"env.perturb.distractors: {count} distractor(s) do not fit on scene {layout.name}'s table "
                     f"outside the tasks' reach (free x ranges {[(round(a, 2), round(b, 2)) for a, b in ranges]})")


def _apart(centres: list[tuple[float, float, float]], kinds: tuple[DistractorKind, ...]) -> bool:
    return all(
        np.hypot(a[0] - b[0], a[1] - b[1]) >= ka.radius + kb.radius + GAP
        for i, (a, ka) in enumerate(zip(centres, kinds)) for b, kb in zip(centres[i + 1:], kinds[i + 1:])
    )
