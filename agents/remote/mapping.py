"""What a third-party policy server reads and returns, declared: the observation mapping and the action
convention (`agent.observation` and `agent.action` of configs/agent/remote.yaml).

    ObservationMapping.for_protocol("vla_eval", cameras={"static": "images.rgb_static"}, states=[0, 1, 2, 3, 4, 5, 6, 14])
    mapping.encode(env_obs, instruction) -> {"images": {"rgb_static": uint8 (H, W, 3)}, "states": ..., "task_description": ...}
    mapping.decode(wire_obs) -> (env-style obs {"rgb_obs": {...}, "robot_obs": ...}, instruction)   # the server's side

    ActionConvention(type="absolute", rotation="axis_angle", gripper_open="negative").decode(reply) -> [(7,), ...]

Wire keys with a "." nest ("images.rgb_static" is obs["images"]["rgb_static"]); openpi's flat keys with
"/" ("observation/image") are single keys. Env actions come out in CALVIN's conventions: relative
(xyz and euler deltas in CALVIN's units, gripper +1 open / -1 close) or absolute (xyz, euler xyz, gripper).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Mapping, Sequence

import numpy as np

from harness.sim.layout import REL_ORN_SCALE
from harness.spatial import axis_angle_to_quat, quat_to_euler

from .wire import WireError

PROTOCOLS = ("native", "vla_eval", "openpi")
CAMERAS = ("static", "gripper")
MAX_IMAGE_SIDE = 4096

# Where each protocol's reference clients put things (vla-eval's CALVIN benchmark; openpi's examples).
LAYOUTS: dict[str, dict[str, Any]] = {
    "vla_eval": {"cameras": {"static": "images.rgb_static"}, "state_key": "states", "instruction_key": "task_description"},
    "openpi": {"cameras": {"static": "observation/image"}, "state_key": "observation/state", "instruction_key": "prompt"},
}


def _get(tree: Mapping[str, Any], path: str) -> Any:
    node: Any = tree
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _put(tree: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    for part in parents:
        tree = tree.setdefault(part, {})
    tree[leaf] = value


def _resized(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if image.shape[:2] == tuple(size):
        return image
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.BILINEAR))


@dataclass(frozen=True)
class ObservationMapping:
    """Which env cameras go under which wire keys (resized to `resize` (H, W) when set), which `robot_obs`
    entries form the state vector under `state_key` (none when `states` is None), and the instruction's key."""

    cameras: dict[str, str] = field(default_factory=dict)
    resize: tuple[int, int] | None = None
    states: tuple[int, ...] | None = None
    state_key: str = "states"
    instruction_key: str = "task_description"

    def __post_init__(self) -> None:
        unknown = set(self.cameras) - set(CAMERAS)
        if unknown or not self.cameras:
            raise ValueError(f"observation.cameras maps env cameras {CAMERAS} to wire keys; got {dict(self.cameras)}")
        if self.resize is not None and (len(self.resize) != 2 or min(self.resize) < 1):
            raise ValueError(f"observation.resize must be [height, width] or null, got {self.resize}")
        if self.states is not None and any(not 0 <= i < 15 for i in self.states):
            raise ValueError(f"observation.states are indices into robot_obs (0..14), got {list(self.states)}")

    @classmethod
    def for_protocol(cls, protocol: str, **overrides: Any) -> "ObservationMapping":
        """The protocol's usual layout with the given fields replaced (unknown fields are an error)."""
        if protocol not in LAYOUTS:
            raise ValueError(f"an observation mapping is for protocols {sorted(LAYOUTS)}, not {protocol!r}")
        known = {f.name for f in fields(cls)}
        unknown = set(overrides) - known
        if unknown:
            raise ValueError(f"unknown observation mapping fields {sorted(unknown)}; known: {sorted(known)}")
        values = {**LAYOUTS[protocol], **{k: v for k, v in overrides.items() if v is not None}}
        values["cameras"] = dict(values["cameras"])
        for key in ("resize", "states"):
            if values.get(key) is not None:
                values[key] = tuple(int(v) for v in values[key])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return {"cameras": dict(self.cameras), "resize": None if self.resize is None else list(self.resize),
                "states": None if self.states is None else list(self.states), "state_key": self.state_key,
                "instruction_key": self.instruction_key}

    def encode(self, obs: Mapping[str, Any], instruction: str) -> dict[str, Any]:
        """The env's observation (as the harness hands it to an agent) -> the wire observation."""
        wire: dict[str, Any] = {}
        rgb = obs.get("rgb_obs", {})
        for camera, key in self.cameras.items():
            image = np.ascontiguousarray(rgb[f"rgb_{camera}"], dtype=np.uint8)
            _put(wire, key, _resized(image, self.resize) if self.resize else image)
        if self.states is not None:
            _put(wire, self.state_key, np.asarray(obs["robot_obs"], dtype=np.float32)[list(self.states)])
        _put(wire, self.instruction_key, instruction)
        return wire

    def wire_names(self) -> dict[str, str]:
        """Env observation key -> the wire key `decode` reads it from (for errors that name what the client sent)."""
        return {**{f"rgb_{camera}": key for camera, key in self.cameras.items()}, "robot_obs": self.state_key}

    def decode(self, wire: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
        """A wire observation -> (env-style observation, instruction); the state vector becomes
        `robot_obs` as it is. Missing cameras are left out (the served agent's check names them)."""
        instruction = _get(wire, self.instruction_key)
        if not isinstance(instruction, str):
            raise WireError(f"observation needs the instruction as a string under {self.instruction_key!r}, "
                            f"got {type(instruction).__name__}")
        obs: dict[str, Any] = {"rgb_obs": {}}
        for camera, key in self.cameras.items():
            image = _get(wire, key)
            if image is not None:
                obs["rgb_obs"][f"rgb_{camera}"] = image
        state = _get(wire, self.state_key)
        if state is not None:
            obs["robot_obs"] = state
        return obs, instruction


def check_observation(obs: Mapping[str, Any], cameras: Sequence[str], wire_names: Mapping[str, str] | None = None) -> None:
    """What a served agent may be given: every camera it declared as uint8 (H, W, 3), a numeric 1-d
    `robot_obs` (and `scene_obs`) when present. Raises WireError naming the entry (and the wire key it came
    from, `wire_names`: ObservationMapping.wire_names)."""
    def name(key: str) -> str:
        return f"{key} (sent as {wire_names[key]!r})" if wire_names and key in wire_names else key

    rgb = obs.get("rgb_obs", {})
    if not isinstance(rgb, Mapping):
        raise WireError(f"observation's 'rgb_obs' must be a map of camera images, got {type(rgb).__name__}")
    for camera in cameras:
        image = rgb.get(f"rgb_{camera}")
        if image is None:
            raise WireError(f"observation lacks the {camera} camera ({name(f'rgb_{camera}')}), which the served "
                            "agent reads")
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            what = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
            raise WireError(f"{name(f'rgb_{camera}')} must be a uint8 (H, W, 3) array, got {what}")
        if not 0 < image.shape[0] <= MAX_IMAGE_SIDE or not 0 < image.shape[1] <= MAX_IMAGE_SIDE:
            raise WireError(f"{name(f'rgb_{camera}')} of {image.shape[0]}x{image.shape[1]} pixels: each side must be "
                            f"1..{MAX_IMAGE_SIDE}")
    for key in ("robot_obs", "scene_obs"):
        value = obs.get(key)
        if value is not None and (not isinstance(value, np.ndarray) or value.ndim != 1 or value.dtype.kind not in "iuf"):
            what = f"{value.dtype} {value.shape}" if isinstance(value, np.ndarray) else type(value).__name__
            raise WireError(f"{name(key)} must be a 1-d numeric array, got {what}")


@dataclass(frozen=True)
class ActionConvention:
    """How a server's actions read: under `key`, one action (7,) or a chunk (C, 7); `type` relative or
    absolute; the rotation as euler xyz or an axis-angle vector; the gripper's sign for "open" and the
    threshold between open and closed; how many actions of a chunk to execute before the next request
    (0: all of it)."""

    key: str = "actions"
    type: str = "relative"
    rotation: str = "euler"
    gripper_open: str = "positive"
    gripper_threshold: float = 0.0
    execute: int = 1

    def __post_init__(self) -> None:
        for name, allowed in (("type", ("relative", "absolute")), ("rotation", ("euler", "axis_angle")),
                              ("gripper_open", ("positive", "negative"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"action.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.execute < 0:
            raise ValueError(f"action.execute must be >= 0 (0: the whole chunk), got {self.execute}")

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def decode(self, reply: Mapping[str, Any]) -> list[np.ndarray]:
        """A reply -> the env actions (7,) to execute, first to last."""
        if not isinstance(reply, Mapping) or self.key not in reply:
            keys = sorted(map(str, reply)) if isinstance(reply, Mapping) else type(reply).__name__
            raise ValueError(f"the server's reply has no {self.key!r} (action.key); it has {keys}")
        try:
            actions = np.asarray(reply[self.key], dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise ValueError(f"the server's {self.key!r} is not numeric: {e}") from None
        if actions.ndim == 1:
            actions = actions[None]
        if actions.ndim != 2 or actions.shape[0] < 1 or actions.shape[1] != 7:
            raise ValueError(f"the server's {self.key!r} must be (7,) or a chunk (C, 7), got shape {actions.shape}")
        chunk = actions[: self.execute] if self.execute else actions
        return [self._env_action(a) for a in chunk]

    def _env_action(self, action: np.ndarray) -> np.ndarray:
        out = action.copy()
        if self.rotation == "axis_angle":
            # a relative rotation is in CALVIN's units (1 = REL_ORN_SCALE rad): converted in radians, where
            # the conversion holds (in units, [1, 1, 1] read as 1.7 rad mixed the axes; [4, 0, 0] wrapped)
            scale = REL_ORN_SCALE if self.type == "relative" else 1.0
            out[3:6] = quat_to_euler(axis_angle_to_quat(action[3:6] * scale)) / scale
        if np.isfinite(action[6]):  # a NaN stays one: the evaluation records it as an invalid action
            is_positive = action[6] > self.gripper_threshold
            out[6] = 1.0 if is_positive == (self.gripper_open == "positive") else -1.0
        return out
