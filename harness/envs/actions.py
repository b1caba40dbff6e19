"""Parsing and validation of the actions calvin_env accepts (docs/CALVIN.md#actions).

Accepted forms:
  * a 7-vector (array/list/tuple of 7 numbers): relative (pos * 0.02 m, euler * 0.05 rad, gripper +-1);
  * a 3-tuple/list (pos3, orn, gripper) with orn as euler xyz (3) or quaternion xyzw (4): absolute;
  * {"type": "cartesian_rel", "action": 7 numbers} or {"type": "cartesian_abs", "action": 7 or 8 numbers}.

Relative values outside [-1, 1] are not clipped (calvin_env doesn't either); the evaluation counts them.
Everything else raises ValueError naming what was expected. The gripper must be exactly +1 or -1
(calvin_env asserts this).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class RelativeAction:
    values: np.ndarray  # (7,) float64

    @property
    def gripper(self) -> int:
        return int(self.values[6])


@dataclass(frozen=True)
class AbsoluteAction:
    pos: np.ndarray  # (3,)
    orn: np.ndarray  # (3,) euler xyz or (4,) quaternion xyzw
    gripper: int


Action = RelativeAction | AbsoluteAction


def _numbers(values: Any, what: str, lengths: tuple[int, ...]) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{what}: expected {' or '.join(map(str, lengths))} numbers, got {values!r}") from e
    if arr.ndim != 1 or arr.shape[0] not in lengths:
        raise ValueError(f"{what}: expected {' or '.join(map(str, lengths))} numbers, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what}: expected finite numbers, got {arr.tolist()}")
    return arr


def _gripper(value: float, what: str) -> int:
    if value not in (1.0, -1.0):
        raise ValueError(f"{what}: the gripper value must be exactly 1 (open) or -1 (close), got {value}")
    return int(value)


def parse_action(action: Any) -> Action:
    if isinstance(action, dict):
        kind = action.get("type")
        if kind == "cartesian_rel":
            return parse_action(np.asarray(action.get("action"), dtype=object).astype(np.float64))
        if kind == "cartesian_abs":
            arr = _numbers(action.get("action"), "cartesian_abs action", (7, 8))
            return AbsoluteAction(arr[:3], arr[3:-1], _gripper(arr[-1], "cartesian_abs action"))
        raise ValueError(f"action dict: expected type 'cartesian_rel' or 'cartesian_abs', got {kind!r}")
    if isinstance(action, (tuple, list)) and len(action) == 3:
        pos = _numbers(action[0], "absolute action position", (3,))
        orn = _numbers(action[1], "absolute action orientation (euler xyz or quaternion xyzw)", (3, 4))
        if len(orn) == 4 and np.linalg.norm(orn) < 1e-6:  # PyBullet would read it as no rotation at all
            raise ValueError(f"absolute action orientation: a quaternion xyzw must not be zero, got {orn.tolist()}")
        gripper = action[2]
        if np.ndim(gripper) == 1 and len(gripper) == 1:  # calvin_env unwraps it: what np.split(a, [3, 6]) gives
            gripper = gripper[0]
        g = _numbers([gripper], "absolute action gripper", (1,))[0]
        return AbsoluteAction(pos, orn, _gripper(g, "absolute action"))
    arr = _numbers(action, "relative action (x, y, z, roll, pitch, yaw, gripper)", (7,))
    _gripper(arr[6], "relative action")
    return RelativeAction(arr.copy())  # never modify the caller's array (calvin_env 1431a46 did)
