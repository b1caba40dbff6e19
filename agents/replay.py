"""A replay agent: plays back a recorded action sequence.

Sources (`actions=`):
  * an array-like of shape (T, 7);
  * a `.npy` file holding such an array;
  * a `.npz` file with the array under `key` (default "actions"; CALVIN's episode files name the
    relative actions "rel_actions" and the absolute ones "actions").

Rows are CALVIN actions: relative (x, y, z, roll, pitch, yaw, gripper) scaled to [-1, 1], or, with
`action_type="absolute"`, (x, y, z, euler x, y, z, gripper) in world coordinates. The gripper is +-1.

The sequence plays on across the subtasks of a chain (`reset()` does not rewind: a recorded chain's
actions follow one another), and starts again at every chain (`new_chain`). Once it is used up the
agent holds still: a zero relative action, or the last absolute pose, with the last gripper value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from agents.base import ActionType, AgentSpec


def load_actions(actions: Any, key: str = "actions") -> np.ndarray:
    """The (T, 7) float64 action array of a replay source; ValueError naming the source when malformed."""
    where = "actions"
    if isinstance(actions, (str, Path)):
        path = Path(actions)
        where = str(path)
        if path.suffix == ".npz":
            with np.load(path) as data:
                if key not in data:
                    raise ValueError(f"{path}: no array {key!r} (has {', '.join(data.files)})")
                actions = data[key]
                where = f"{path}[{key!r}]"
        elif path.suffix == ".npy":
            actions = np.load(path)
        else:
            raise ValueError(f"{path}: expected a .npy or .npz file of (T, 7) actions")
    arr = np.asarray(actions, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 7 or arr.shape[0] == 0:
        raise ValueError(f"{where}: expected a (T, 7) array of actions with T >= 1, got shape {arr.shape}")
    return arr


class ReplayAgent:
    def __init__(self, actions: Any, key: str = "actions", action_type: ActionType = "relative") -> None:
        if action_type not in ("relative", "absolute"):
            raise ValueError(f"ReplayAgent.action_type must be 'relative' or 'absolute', got {action_type!r}")
        self.actions = load_actions(actions, key)
        source = str(actions) if isinstance(actions, (str, Path)) else None
        self.spec = AgentSpec(
            name="replay", action_type=action_type, checkpoint=source, extra={"steps": len(self.actions)}
        )
        self.cursor = 0

    def new_chain(self, seed: int) -> None:
        self.cursor = 0

    def reset(self) -> None:
        pass

    def step(self, obs: dict[str, Any], instruction: str) -> np.ndarray:
        if self.cursor < len(self.actions):
            action = self.actions[self.cursor].copy()
            self.cursor += 1
            return action
        last = self.actions[-1]
        return last.copy() if self.spec.action_type == "absolute" else np.r_[np.zeros(6), last[6]]

    def planned_tcp_path(self) -> np.ndarray | None:
        return None
