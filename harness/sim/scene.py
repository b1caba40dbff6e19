"""The play table: ground, blocks and the articulated table of one scene, their state and light logic.

Load order gives calvin_env's body ids: the robot is loaded first (uid 0) by the env, then the ground
(1), the three blocks in the scene's scene_obs order (2, 3, 4) and the table (5). Two visual-only
bodies follow: the table's static shell (6) and the floor (7).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pybullet as p

from harness.sim.cameras import StaticLayer, VisualShape, visual_shapes
from harness.sim.distractors import DistractorKind
from harness.sim.layout import (
    BLOCK_REST_Z,
    BLOCK_RGBA,
    BUTTON_PRESSED_THRESHOLD,
    SWITCH_ON_THRESHOLD,
    TABLE_LINKS,
    SceneLayout,
)

ASSETS_DIR = Path(__file__).parent / "assets"
FURNITURE_FORCE = 4.0  # N: velocity motors at 0 act as Coulomb friction; the button's spring
LED_ON_RGBA = (0.0, 1.0, 0.0, 1.0)
BULB_ON_RGBA = (1.0, 1.0, 0.0, 1.0)
LIGHT_OFF_RGBA = (1.0, 1.0, 1.0, 1.0)
SLIDE, DRAWER, BUTTON, SWITCH = (TABLE_LINKS[k] for k in ("slide_link", "drawer_link", "button_link", "switch_link"))
LED_LINK, BULB_LINK = TABLE_LINKS["led_link"], TABLE_LINKS["light_link"]
FURNITURE_JOINTS = (SLIDE, DRAWER, BUTTON, SWITCH)
MAX_PLACEMENT_TRIES = 1000


@dataclass
class LightLogic:
    """calvin_env's light rules (docs/GEOMETRY.md#lights), evaluated once per env step.

    Switch -> bulb is a level rule applied on a change of the switch's high/low flag; a reset sets the
    flag low. Button -> LED toggles on the step the button becomes pressed (> 0.010). After a reset the
    button's toggle flag copies the LED (calvin_env HEAD); `legacy_button_reset` reproduces calvin_env
    1431a46, which the CALVIN repo pins, where the flag resets to off so the first press after a reset
    with the LED on does nothing (docs/CALVIN.md#calvin_env-versions).
    """

    led: int = 0
    bulb: int = 0
    button_flag: int = 0
    button_was_pressed: bool = False
    switch_high: bool = False
    legacy_button_reset: bool = False

    def reset(self, led: int, bulb: int, button_q: float) -> None:
        self.led, self.bulb = int(led), int(bulb)
        self.button_flag = 0 if self.legacy_button_reset else self.led
        self.button_was_pressed = button_q > BUTTON_PRESSED_THRESHOLD
        self.switch_high = False

    def update(self, button_q: float, switch_q: float) -> bool:
        """Advance one env step; True when a light changed."""
        before = (self.led, self.bulb)
        pressed = button_q > BUTTON_PRESSED_THRESHOLD
        if pressed and not self.button_was_pressed:
            self.button_flag = 1 - self.button_flag
            self.led = self.button_flag
        self.button_was_pressed = pressed
        high = switch_q > SWITCH_ON_THRESHOLD
        if high != self.switch_high:
            self.switch_high = high
            self.bulb = int(high)
        return (self.led, self.bulb) != before


class PlayTableScene:
    def __init__(self, client: int, layout: SceneLayout, legacy_button_reset: bool = False) -> None:
        self.cid = client
        self.layout = layout
        self.ground = p.loadURDF(str(ASSETS_DIR / "ground.urdf"), useFixedBase=True, physicsClientId=client)
        self.block_uids: dict[str, int] = {}
        for color in layout.block_order:
            urdf = ASSETS_DIR / f"block_{color}_{layout.block_sizes[color]}.urdf"
            uid = p.loadURDF(str(urdf), physicsClientId=client)
            p.changeDynamics(
                uid, -1, lateralFriction=0.7, spinningFriction=0.001, rollingFriction=0.0, restitution=0.0,
                collisionMargin=0.001, physicsClientId=client,
            )
            self.block_uids[color] = uid
        # (mass, lateral friction) as built: what scale_block_dynamics scales
        self.block_dynamics = {uid: p.getDynamicsInfo(uid, -1, physicsClientId=client)[:2] for uid in self.block_uids.values()}
        self.table = p.loadURDF(str(ASSETS_DIR / f"table_{layout.name}.urdf"), useFixedBase=True, physicsClientId=client)
        # visual-only bodies, drawn after everything in front of them (TinyRenderer draws in load order)
        self.shell = p.loadURDF(str(ASSETS_DIR / f"table_{layout.name}_shell.urdf"), useFixedBase=True, physicsClientId=client)
        self.floor = p.loadURDF(str(ASSETS_DIR / "floor.urdf"), useFixedBase=True, physicsClientId=client)
        self._furniture_masses = {j: p.getDynamicsInfo(self.table, j, physicsClientId=client)[0] for j in (SLIDE, DRAWER)}
        self._hold_furniture(FURNITURE_FORCE)
        self.lights = LightLogic(legacy_button_reset=legacy_button_reset)
        self._shown_lights: tuple[int, int] | None = None
        # the distractor axis's bodies (uids after the floor) and where each chain puts them
        self.distractors = DistractorBodies(client, ())

    def _hold_furniture(self, force: float) -> None:
        """The door's, drawer's and switch's Coulomb friction (velocity motors at 0) and the button's spring."""
        for joint in (SLIDE, DRAWER, SWITCH):
            p.setJointMotorControl2(
                self.table, joint, p.VELOCITY_CONTROL, targetVelocity=0.0, force=force, physicsClientId=self.cid
            )
        p.setJointMotorControl2(
            self.table, BUTTON, p.POSITION_CONTROL, targetPosition=0.0, force=force, physicsClientId=self.cid
        )

    def set_furniture_dynamics(self, friction: float = 1.0, mass: float = 1.0, damping: float = 0.0) -> None:
        """The furniture axes (docs/ROBUSTNESS.md): the door's, drawer's and switch's friction and the button's
        spring force times `friction`; the door's and drawer's masses times `mass` (a heavier button or switch
        would sink under its own weight against its 4 N spring or friction: the button would press itself);
        a joint damping of `damping` N s/m on all four (0 as built)."""
        if friction != 1.0:
            self._hold_furniture(FURNITURE_FORCE * friction)
        for joint in FURNITURE_JOINTS:
            heavier = mass != 1.0 and joint in self._furniture_masses
            changes = {**({"mass": self._furniture_masses[joint] * mass} if heavier else {}),
                       **({"jointDamping": damping} if damping else {})}
            if changes:
                p.changeDynamics(self.table, joint, **changes, physicsClientId=self.cid)

    def static_layer(self, robot_uid: int) -> StaticLayer:
        """The static camera's cacheable layer (see cameras.StaticLayer)."""
        furniture = [
            *visual_shapes(self.cid, self.shell),
            *visual_shapes(self.cid, self.floor),
            *visual_shapes(self.cid, self.table, self._table_links()),
            *visual_shapes(self.cid, robot_uid, {-1}),
        ]
        robot_links = set(range(p.getNumJoints(robot_uid, physicsClientId=self.cid)))
        movers = [*visual_shapes(self.cid, robot_uid, robot_links)]
        for uid in [*self.block_uids.values(), *self.distractors.uids]:
            movers += visual_shapes(self.cid, uid)
        return StaticLayer(furniture, movers, self.furniture_key)

    def _table_links(self) -> set[int]:
        """The table's links but the LED and the bulb (whose colours show the light state)."""
        return set(range(-1, p.getNumJoints(self.table, physicsClientId=self.cid))) - {LED_LINK, BULB_LINK}

    def furniture_shapes(self) -> list[VisualShape]:
        """The table's and its shell's visual shapes but the lights, as built (the appearance axes' parts)."""
        return [*visual_shapes(self.cid, self.table, self._table_links()), *visual_shapes(self.cid, self.shell)]

    def furniture_key(self) -> tuple:
        """Joint values to 1 um (a pixel of the static camera is ~3.6 mm) and the lights."""
        joints = p.getJointStates(self.table, (SLIDE, DRAWER, BUTTON, SWITCH), physicsClientId=self.cid)
        return (*(round(s[0], 6) for s in joints), self.lights.led, self.lights.bulb)

    # ------------------------------------------------------------------ state

    def joint(self, index: int) -> float:
        return p.getJointState(self.table, index, physicsClientId=self.cid)[0]

    def reset(self, scene_obs: np.ndarray) -> None:
        """calvin_env's order: doors, lights, button (flag from its light), switch, then blocks."""
        self.reset_furniture(scene_obs[:4])
        self.lights.reset(led=_light(scene_obs, 5, "led"), bulb=_light(scene_obs, 4, "lightbulb"),
                          button_q=float(scene_obs[2]))
        self._show_lights()
        for color in self.layout.block_order:
            pose = scene_obs[self.layout.block_obs_slice(color)]
            self.place_block(color, pose[:3], pose[3:6])
        self.distractors.place()

    def reset_furniture(self, joints: np.ndarray) -> None:
        """Slide, drawer, button and switch joint values (scene_obs[0:4]), at rest."""
        for index, q in zip((SLIDE, DRAWER, BUTTON, SWITCH), joints):
            p.resetJointState(self.table, index, float(q), 0.0, physicsClientId=self.cid)

    def place_block(self, color: str, pos: np.ndarray, euler: np.ndarray) -> None:
        _place_body(self.cid, self.block_uids[color], pos, p.getQuaternionFromEuler([float(v) for v in euler]))

    def add_distractors(self, kinds: tuple[DistractorKind, ...]) -> list[int]:
        """Bodies for the distractor axis (once), out of the way until their poses are set and a reset places them."""
        self.distractors = DistractorBodies(self.cid, kinds)
        return self.distractors.uids

    def permute_block_colors(self, permutation: dict[str, str]) -> dict[int, tuple[float, float, float, float]]:
        """The block that was colour c looks colour permutation[c] from now on, and IS that colour to
        everything else: scene_obs, the info the oracle reads and the layout's block sizes follow the look
        (the block colour axis, docs/ROBUSTNESS.md). Returns the bodies' new colours, for the renderer to apply."""
        uids = dict(self.block_uids)
        for old, new in permutation.items():
            self.block_uids[new] = uids[old]
        self.layout = self.layout.recolored(permutation)
        return {uids[old]: BLOCK_RGBA[new] for old, new in permutation.items()}

    def scale_block_dynamics(self, friction: float, mass: float) -> None:
        """The blocks' lateral friction and mass times these factors (the perturbation suite's dynamics axes)."""
        for uid, (base_mass, base_friction) in self.block_dynamics.items():
            p.changeDynamics(uid, -1, mass=base_mass * mass, lateralFriction=base_friction * friction,
                             physicsClientId=self.cid)

    def random_scene_obs(self, rng: np.random.Generator) -> np.ndarray:
        """calvin_env's random reset: furniture at 0, lights off, each block on a random surface
        (table, slider_left, slider_right) with a random yaw, redrawn until no two blocks touch."""
        surfaces = (self.layout.sample_table, self.layout.sample_slider_left, self.layout.sample_slider_right)
        obs = np.zeros(24)
        for _ in range(MAX_PLACEMENT_TRIES):
            for color in self.layout.block_order:
                (x0, x1), (y0, y1) = surfaces[rng.integers(3)]
                pose = np.array([rng.uniform(x0, x1), rng.uniform(y0, y1), BLOCK_REST_Z["table"], 0, 0, rng.uniform(-np.pi, np.pi)])
                obs[self.layout.block_obs_slice(color)] = pose
                self.place_block(color, pose[:3], pose[3:])
            if not self._blocks_touch():
                return obs
        raise RuntimeError(f"could not place the blocks without contact in {MAX_PLACEMENT_TRIES} tries")

    def _blocks_touch(self) -> bool:
        uids = list(self.block_uids.values())
        return any(
            p.getClosestPoints(a, b, distance=0.0, physicsClientId=self.cid)
            for i, a in enumerate(uids) for b in uids[i + 1:]
        )

    def update_lights(self) -> None:
        """The light logic, once per env step after the physics substeps."""
        if self.lights.update(self.joint(BUTTON), self.joint(SWITCH)):
            self._show_lights()

    def _show_lights(self) -> None:
        state = (self.lights.led, self.lights.bulb)
        if state == self._shown_lights:
            return
        p.changeVisualShape(self.table, LED_LINK, rgbaColor=LED_ON_RGBA if state[0] else LIGHT_OFF_RGBA, physicsClientId=self.cid)
        p.changeVisualShape(self.table, BULB_LINK, rgbaColor=BULB_ON_RGBA if state[1] else LIGHT_OFF_RGBA, physicsClientId=self.cid)
        self._shown_lights = state

    # ------------------------------------------------------------------ observation and info

    def observation(self) -> np.ndarray:
        joints = p.getJointStates(self.table, (SLIDE, DRAWER, BUTTON, SWITCH), physicsClientId=self.cid)
        obs = np.empty(24)
        obs[0:4] = [s[0] for s in joints]
        obs[4] = self.lights.bulb
        obs[5] = self.lights.led
        for color in self.layout.block_order:
            pos, orn = p.getBasePositionAndOrientation(self.block_uids[color], physicsClientId=self.cid)
            sl = self.layout.block_obs_slice(color)
            obs[sl.start:sl.start + 3] = pos
            obs[sl.start + 3:sl.stop] = p.getEulerFromQuaternion(orn)
        return obs

    def info(self) -> dict:
        cid = self.cid
        movable = {}
        for color in self.layout.block_order:
            uid = self.block_uids[color]
            pos, orn = p.getBasePositionAndOrientation(uid, physicsClientId=cid)
            lin, ang = p.getBaseVelocity(uid, physicsClientId=cid)
            movable[f"block_{color}"] = {
                "current_pos": pos, "current_orn": orn, "current_lin_vel": lin, "current_ang_vel": ang,
                "contacts": p.getContactPoints(bodyA=uid, physicsClientId=cid), "uid": uid,
            }
        joints = p.getJointStates(self.table, (SLIDE, DRAWER, BUTTON, SWITCH), physicsClientId=cid)
        slide, drawer, button, switch = (s[0] for s in joints)
        return {
            "fixed_objects": {
                "table": {"uid": self.table, "links": dict(TABLE_LINKS), "contacts": p.getContactPoints(bodyA=self.table, physicsClientId=cid)}
            },
            "movable_objects": movable,
            "doors": {"base__slide": {"current_state": slide}, "base__drawer": {"current_state": drawer}},
            "buttons": {"base__button": {"joint_state": button, "logical_state": self.lights.button_flag}},
            "switches": {"base__switch": {"joint_state": switch, "logical_state": int(self.lights.switch_high)}},
            "lights": {"lightbulb": {"logical_state": self.lights.bulb}, "led": {"logical_state": self.lights.led}},
        }


class DistractorBodies:
    """The distractor axis's bodies in one PyBullet client (harness/sim/distractors.py says what they are and
    where they may stand), and where they stand from the next reset on; the built-in scene and env=calvin
    (harness/envs/calvin.py) hold them alike."""

    def __init__(self, client: int, kinds: tuple[DistractorKind, ...]) -> None:
        self.cid = client
        self.uids = [_distractor_body(client, kind) for kind in kinds]
        self.poses = np.array([_parking(k) for k in range(len(kinds))]).reshape(-1, 3)

    def place(self) -> None:
        """At their poses, at rest (a reset)."""
        for uid, pos in zip(self.uids, self.poses):
            _place_body(self.cid, uid, pos, (0, 0, 0, 1))

    def park(self) -> None:
        """Out of the way (with the blocks) while the env forgets its contacts."""
        for k, uid in enumerate(self.uids):
            _place_body(self.cid, uid, _parking(k), (0, 0, 0, 1))


def _light(scene_obs: np.ndarray, index: int, name: str) -> int:
    """A light's state from scene_obs: exactly 0 or 1, as calvin_env's Light.reset accepts (it raises otherwise)."""
    value = float(scene_obs[index])
    if value not in (0.0, 1.0):
        raise ValueError(f"scene_obs[{index}] ({name}) must be 0 (off) or 1 (on), got {value}")
    return int(value)


def _parking(k: int) -> tuple[float, float, float]:
    """Where the k-th distractor waits, far from everything and from the blocks' own parking (+y)."""
    return (10.0, -10.0 * (k + 1), 10.0)


def _place_body(client: int, uid: int, pos: np.ndarray, orn: tuple[float, ...]) -> None:
    p.resetBasePositionAndOrientation(uid, [float(v) for v in pos], orn, physicsClientId=client)
    # resetBasePositionAndOrientation already zeroes the base velocity (as in calvin_env, which calls only it);
    # said explicitly, so a reset restores a recorded state exactly whatever PyBullet version runs it.
    p.resetBaseVelocity(uid, (0, 0, 0), (0, 0, 0), physicsClientId=client)


def _distractor_body(client: int, kind: DistractorKind) -> int:
    """A rigid body of one primitive shape with the blocks' contact parameters."""
    if kind.shape == "sphere":
        shape = {"shapeType": p.GEOM_SPHERE, "radius": kind.radius}
    else:
        shape = {"shapeType": p.GEOM_CYLINDER if kind.shape == "cylinder" else p.GEOM_CAPSULE,
                 "radius": kind.radius}
    collision = p.createCollisionShape(**shape, height=kind.length, physicsClientId=client)
    visual = p.createVisualShape(**shape, length=kind.length, rgbaColor=kind.rgba, physicsClientId=client)
    uid = p.createMultiBody(kind.mass, collision, visual, basePosition=_parking(0), physicsClientId=client)
    p.changeDynamics(uid, -1, lateralFriction=0.7, spinningFriction=0.001, rollingFriction=0.001, restitution=0.0,
                     physicsClientId=client)
    return uid
