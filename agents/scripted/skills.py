"""The expert's skills: one generator per CALVIN task, yielding waypoints.

A skill reads the current `World` (updated in place before it resumes), yields the next waypoint, and
looks again once that waypoint is reached or given up. That keeps each task's script readable top to
bottom and closed-loop: skills check the scene after acting and try again while the subtask lasts.
Geometry comes from calvin-geometry.md through `World` (handles, slots, slope frames).
"""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

from agents.scripted.control import CLOSE, OPEN, Waypoint, down
from agents.scripted.world import Block, World
from harness.sim.layout import BLOCK_COLORS, SLOPE_AXIS, SLOPE_NORMAL, TABLE_TOP_Z
from harness.spatial import wrap_angle

Skill = Iterator[Waypoint]
NEUTRAL_YAW = np.pi / 2  # about the TCP's yaw at CALVIN's neutral pose (1.50): fingers open along world x
CRUISE_Z = 0.60  # travel height over the table
FINGER_HALF_THICKNESS = 0.0105  # along TCP x
FINGER_HALF_WIDTH = 0.027  # closed fingers, along TCP y
FINGER_TIP_BELOW_TCP = 0.015
ATTEMPTS = 3


def wp(pos, euler, gripper, **kw) -> Waypoint:
    return Waypoint(np.asarray(pos, dtype=float), np.asarray(euler, dtype=float), gripper, **kw)


def lifted(pos: np.ndarray, z: float) -> np.ndarray:
    return np.array([pos[0], pos[1], z])


CABINET_FRONT_Y = 0.0  # beyond this the sloped cabinet face, the door and the bay begin


def travel(world: World, pos: np.ndarray, euler: np.ndarray, gripper: int, z: float = CRUISE_Z) -> Skill:
    """Up from where the TCP is, across at height z, and down to pos.

    Sideways moves happen in front of the cabinet: the door's sloped panel rises toward the back, so
    the TCP enters and leaves the cabinet's zone (the bay, the door, the switch) straight along y."""
    start = world.tcp.copy()
    if start[2] < z - 0.02:
        yield wp(lifted(start, z), euler, gripper, tol=0.03, angle_tol=0.4)
    if start[1] > CABINET_FRONT_Y and abs(start[0] - pos[0]) > 0.03:
        yield wp(np.array([start[0], CABINET_FRONT_Y - 0.02, z]), euler, gripper, tol=0.03, angle_tol=0.4)
    if pos[1] > CABINET_FRONT_Y:
        yield wp(np.array([pos[0], CABINET_FRONT_Y - 0.02, max(z, pos[2])]), euler, gripper, tol=0.02, angle_tol=0.15)
    yield wp(lifted(pos, max(z, pos[2])), euler, gripper, tol=0.02, angle_tol=0.15)
    yield wp(pos, euler, gripper, tol=0.01, speed=0.6)


# ---------------------------------------------------------------------------------------- articulation


def pull_drawer_to(world: World, target_q: float) -> Skill:
    """Hook the closed fingers behind the handle bar (between bar and front panel) and pull."""
    for _ in range(ATTEMPTS):
        if world.drawer_q >= target_q:
            return
        hook = world.drawer_handle() + (0.0, 0.0395, 0.010)  # between the bar and the panel
        yield from travel(world, hook, down(NEUTRAL_YAW), CLOSE, z=0.47)
        pull = min(0.22 - world.drawer_q, target_q - world.drawer_q + 0.03)
        yield wp(hook - (0.0, pull, 0.0), down(NEUTRAL_YAW), CLOSE, speed=0.5, tol=0.01)
        yield wp(lifted(world.tcp, 0.50), down(NEUTRAL_YAW), CLOSE, tol=0.02)


def push_drawer_to(world: World, target_q: float) -> Skill:
    """Push the handle bar in with the closed fingers."""
    for _ in range(ATTEMPTS):
        if world.drawer_q <= target_q:
            return
        behind = world.drawer_handle() + (0.0, -0.0125 - FINGER_HALF_THICKNESS - 0.012, 0.005)
        yield from travel(world, behind, down(NEUTRAL_YAW), CLOSE, z=0.47)
        yield wp(behind + (0.0, world.drawer_q - target_q + 0.01, 0.0), down(NEUTRAL_YAW), CLOSE, speed=0.5, tol=0.01)
        yield wp(world.tcp - (0.0, 0.04, 0.0), down(NEUTRAL_YAW), CLOSE, tol=0.02)
        yield wp(lifted(world.tcp, 0.55), down(NEUTRAL_YAW), CLOSE, tol=0.02)


def open_drawer(world: World) -> Skill:
    yield from pull_drawer_to(world, 0.20)


def close_drawer(world: World) -> Skill:
    yield from push_drawer_to(world, 0.01)


def slide_door_to(world: World, target_q: float) -> Skill:
    """Push the door's handle bar sideways until the door's joint reaches target_q (+q slides it left)."""
    for _ in range(ATTEMPTS):
        error = target_q - world.door_q
        if abs(error) < 0.02:
            return
        direction = 1 if error > 0 else -1
        # The bar spans u 0.12 .. 0.16 from the door's origin: push the face on the far side with the
        # closed fingers' edge (they are 5.4 cm wide along x at the neutral yaw, which keeps the hand's
        # long side parallel to the door instead of over it).
        u = 0.16 + FINGER_HALF_WIDTH + 0.010 if direction > 0 else 0.12 - FINGER_HALF_WIDTH - 0.010
        contact = world.door_point(u, -0.05, 0.0705)
        tcp = np.array([contact[0], contact[1] - 0.002, contact[2] + FINGER_TIP_BELOW_TCP])
        yield from travel(world, tcp, down(NEUTRAL_YAW), CLOSE, z=0.68)
        yield wp(tcp - (error + direction * 0.01, 0.0, 0.0), down(NEUTRAL_YAW), CLOSE, speed=0.6, tol=0.01)
        yield wp(lifted(world.tcp, 0.68), down(NEUTRAL_YAW), CLOSE, tol=0.02)


def move_slider(direction: int) -> Callable[[World], Skill]:
    """direction +1 slides the door left (to the end of its travel), -1 right."""

    def skill(world: World) -> Skill:
        yield from slide_door_to(world, world.layout.door_travel - 0.01 if direction > 0 else 0.01)

    return skill


def clear_slot(world: World, slot: np.ndarray, margin: float = 0.13) -> Skill:
    """Slide the door far enough from a slider slot that the hand (20 cm long, leaning back) can reach
    into it without touching the door."""
    lo, hi = world.layout.door_x_range(world.door_q)
    if hi < slot[0] - margin or lo > slot[0] + margin:
        return
    if slot[0] < world.layout.bay_center_x:  # the left slot: door to the right (q down)
        target = world.layout.door_origin_x - 0.001 - (slot[0] + margin)
    else:
        target = world.layout.door_origin_x + 0.281 - (slot[0] - margin)
    yield from slide_door_to(world, float(np.clip(target, 0.0, world.layout.door_travel)))


def press_button(want_on: bool) -> Callable[[World], Skill]:
    """Press the button with the closed fingers until the LED shows the wanted state."""

    def skill(world: World) -> Skill:
        for _ in range(ATTEMPTS):
            top = world.button_top()
            above = top + (0.0, 0.0, 0.06)
            yield from travel(world, above, down(NEUTRAL_YAW), CLOSE, z=0.58)
            yield wp(top + (0.0, 0.0, FINGER_TIP_BELOW_TCP - 0.024), down(NEUTRAL_YAW), CLOSE, speed=0.5, tol=0.006, max_steps=25)
            yield wp(above, down(NEUTRAL_YAW), CLOSE, tol=0.01)
            if world.led_on == want_on:
                break

    return skill


SWITCH_GRASP = np.array([-2.0 * np.pi / 3.0, 0.0, 0.0])  # approach into the sloped face, fingers along the slope


def flip_switch(want_on: bool) -> Callable[[World], Skill]:
    """Grasp the switch bar from the front (fingers above and below it along the slope) and slide it."""

    def skill(world: World) -> Skill:
        for _ in range(ATTEMPTS):
            bar = world.switch_point(0.0, 0.009, 0.0535)
            out = bar + 0.08 * SLOPE_NORMAL
            yield from travel(world, out, SWITCH_GRASP, OPEN, z=0.62)
            yield wp(bar, SWITCH_GRASP, OPEN, speed=0.4, tol=0.008)
            yield wp(bar, SWITCH_GRASP, CLOSE, tol=0.01)
            target_q = 0.085 if want_on else 0.003
            yield wp(bar + (target_q - world.switch_q) * SLOPE_AXIS, SWITCH_GRASP, CLOSE, speed=0.3, tol=0.006, max_steps=50)
            yield wp(world.tcp, SWITCH_GRASP, OPEN, tol=0.02)
            yield wp(world.tcp + 0.08 * SLOPE_NORMAL, SWITCH_GRASP, OPEN, tol=0.02)
            if world.bulb_on == want_on:
                break

    return skill


# ---------------------------------------------------------------------------------------- blocks


def grasp_yaw(block: Block) -> float:
    """The TCP yaw that closes the fingers across the block's 4 cm side (its local y; any side of a
    cube), nearest the neutral yaw."""
    period = np.pi / 2 if abs(block.extents[0] - block.extents[1]) < 1e-6 else np.pi
    base = block.yaw
    k = np.round((NEUTRAL_YAW - base) / period)
    return float(base + k * period)


def in_bay(pos: np.ndarray) -> bool:
    return pos[1] > 0.03 and pos[2] < 0.56


# Reaching into the cabinet bay. Pointing straight down, the wrist (panda link 7) meets the roof beam
# over the bay, and at slider_right the 20 cm hand meets the side block 9 cm away. Leaning the gripper
# back by 0.6 rad (top toward the robot) keeps both clear, with the fingers still closing along x.
BAY_EULER = np.array([np.pi, -0.6, np.pi / 2])


def gripper_euler_at(pos: np.ndarray, block: Block | None = None) -> np.ndarray:
    """Orientation for working at pos: leaning into the bay, else pointing down across the block's
    4 cm side. Closing fingers turn a block that sits up to 22.5 deg off (CALVIN's slots draw yaw in
    pi/2 +- pi/8) into line with them."""
    if in_bay(pos):
        return BAY_EULER
    return down(grasp_yaw(block) if block is not None else NEUTRAL_YAW)


def grasp(world: World, color: str) -> Skill:
    """Open above the block, descend around it, close. Tries again while the block is not held."""
    for _ in range(ATTEMPTS):
        block = world.block(color)
        euler = gripper_euler_at(block.pos, block)
        above = block.pos + (0.0, 0.0, 0.10)
        yield from travel(world, above, euler, OPEN, z=max(CRUISE_Z, above[2]))
        block = world.block(color)
        euler = gripper_euler_at(block.pos, block)
        yield wp(block.pos + (0.0, 0.0, 0.003), euler, OPEN, speed=0.5, tol=0.008)
        yield wp(world.block(color).pos + (0.0, 0.0, 0.003), euler, CLOSE, tol=0.02)
        if world.held_block() is not None and world.held_block().color == color:
            return
        yield wp(world.tcp + (0.0, 0.0, 0.08), euler, OPEN, tol=0.02)


def lift(color: str, height: float = 0.10) -> Callable[[World], Skill]:
    def skill(world: World) -> Skill:
        block = world.block(color)
        if block.pos[1] > 0.02 and block.pos[2] > 0.445:  # in the cabinet bay: the door must be out of the way
            yield from clear_slot(world, block.pos)
        yield from grasp(world, color)
        yield wp(world.tcp + (0.0, 0.0, height), world.tcp_euler, CLOSE, speed=0.5, tol=0.01, max_steps=200)

    return skill


def release_and_retreat(world: World, up: float = 0.08) -> Skill:
    yield wp(world.tcp, world.tcp_euler, OPEN, tol=0.02)
    yield wp(world.tcp + (0.0, 0.0, up), world.tcp_euler, OPEN, tol=0.02)


def held_or_nearest(world: World) -> Block:
    held = world.held_block()
    return held if held is not None else min(world.blocks(), key=lambda b: float(np.linalg.norm(b.pos - world.tcp)))


def place_at(world: World, pos: np.ndarray, approach_z: float = CRUISE_Z) -> Skill:
    """Carry the held block above pos, lower it there, let go and back off upward."""
    euler = BAY_EULER if in_bay(pos) else down(world.tcp_euler[2])
    yield from travel(world, pos + (0.0, 0.0, 0.008), euler, CLOSE, z=approach_z)
    yield from release_and_retreat(world)


def place_in_slider(world: World) -> Skill:
    slot = world.open_slider_slot()
    if world.held_block() is not None:
        # the held block goes in the slot the door does not cover; with the block in hand the door can
        # still be pushed aside with the closed fingers' outside, so clear it first if it is in the way
        yield from clear_slot(world, slot)
    yield from place_at(world, slot, approach_z=0.60)


def place_in_drawer(world: World) -> Skill:
    yield from pull_drawer_to(world, 0.18)
    yield from place_at(world, world.drawer_inside())


def stack_block(world: World) -> Skill:
    """Put the held block on top of a block lying on the table, aligned with it."""
    held = held_or_nearest(world)
    below = min((b for b in world.blocks() if b.color != held.color and world.on_table(b)),
                key=lambda b: float(np.linalg.norm(b.pos[:2] - held.pos[:2])), default=None)
    if below is None:
        return
    yaw = grasp_yaw(below)
    target = below.pos + (0.0, 0.0, 0.04 + 0.004)
    yield wp(lifted(world.tcp, max(CRUISE_Z, world.tcp[2])), down(yaw), CLOSE, tol=0.03, angle_tol=0.3)
    yield wp(lifted(target, CRUISE_Z), down(yaw), CLOSE, tol=0.01, angle_tol=0.05)
    yield wp(target, down(yaw), CLOSE, speed=0.4, tol=0.006)
    yield from release_and_retreat(world, up=0.10)


def unstack_block(world: World) -> Skill:
    """Lift the upper block of a stack off the lower one."""
    top = max(world.blocks(), key=lambda b: b.pos[2])
    yield from lift(top.color, height=0.08)(world)


def push_block(color: str, direction: int) -> Callable[[World], Skill]:
    """Push a block on the table along world x (+1: right) with the closed fingers' flat side."""

    def skill(world: World) -> Skill:
        for _ in range(ATTEMPTS):
            block = world.block(color)
            start_x = block.pos[0]
            side = block.footprint_half(np.array([1.0, 0.0, 0.0]))
            dy = clearance_shift(world, block, direction)
            start = block.pos + (-direction * (side + FINGER_HALF_THICKNESS + 0.02), 0.0, 0.005 + FINGER_TIP_BELOW_TCP)
            yield from travel(world, start, down(0.0), CLOSE, z=0.56)
            end = start + (direction * 0.16, dy, 0.0)
            yield wp(end, down(0.0), CLOSE, speed=0.5, tol=0.01)
            yield wp(world.tcp + (-direction * 0.03, 0.0, 0.0), down(0.0), CLOSE, tol=0.015)
            if direction * (world.block(color).pos[0] - start_x) > 0.1:
                break
        yield wp(lifted(world.tcp, 0.56), down(0.0), CLOSE, tol=0.02)

    return skill


def clearance_shift(world: World, block: Block, direction: int) -> float:
    """A sideways (y) drift for a push that keeps the block off the button's collar on its way."""
    button = world.button_top()
    path_x = sorted((block.pos[0], block.pos[0] + direction * 0.16))
    if not (path_x[0] - 0.06 < button[0] < path_x[1] + 0.06) or abs(block.pos[1] - button[1]) > 0.075:
        return 0.0
    return 0.075 - (block.pos[1] - button[1]) if block.pos[1] >= button[1] - 0.01 else -(0.0)


def rotate_block(color: str, direction: int) -> Callable[[World], Skill]:
    """Grasp, lift a little, turn by 90 deg (direction -1: right, i.e. clockwise seen from above), set down."""

    def skill(world: World) -> Skill:
        yield from grasp(world, color)
        yaw = float(world.tcp_euler[2])
        lift_to = world.tcp + (0.0, 0.0, 0.03)
        yield wp(lift_to, down(yaw), CLOSE, speed=0.5, tol=0.01)
        turned = down(yaw + direction * np.pi / 2)
        yield wp(lift_to, turned, CLOSE, speed=0.6, tol=0.01, angle_tol=0.05, max_steps=80)
        yield wp(lift_to - (0.0, 0.0, 0.028), turned, CLOSE, speed=0.4, tol=0.008)
        yield from release_and_retreat(world)

    return skill


def push_into_drawer(world: World) -> Skill:
    """Push the block lying on the table toward the robot, off the table's edge into the open drawer."""
    yield from pull_drawer_to(world, 0.19)
    block = next((b for b in world.blocks() if world.on_table(b)), None)
    if block is None:
        return
    inside = world.drawer_inside()
    dx = float(np.clip(inside[0] - block.pos[0], -0.08, 0.08))
    side = block.footprint_half(np.array([0.0, 1.0, 0.0]))
    start = block.pos + (0.0, side + FINGER_HALF_THICKNESS + 0.02, 0.005 + FINGER_TIP_BELOW_TCP)
    yield from travel(world, start, down(NEUTRAL_YAW), CLOSE, z=0.56)
    edge = start + (dx, -0.10 - (block.pos[1] + 0.18) - 0.02, 0.0)  # until the block's centre is past y -0.18
    yield wp(edge, down(NEUTRAL_YAW), CLOSE, speed=0.4, tol=0.01)
    yield wp(lifted(world.tcp, 0.56), down(NEUTRAL_YAW), CLOSE, tol=0.02)


# ---------------------------------------------------------------------------------------- registry

NEEDS_HELD_BLOCK = {"place_in_slider", "place_in_drawer", "stack_block"}


def let_go_of_leftovers(world: World, task: str) -> Skill:
    """A subtask ends the moment its predicate holds, often mid-skill: a rotated block still in the
    fingers, the hand down by a handle. Before a task that does not use a held block, let go of it."""
    if task in NEEDS_HELD_BLOCK:
        return
    if world.held_block() is not None or world.robot_obs[14] < 0 and world.tcp[2] < 0.50:
        yield wp(world.tcp, world.tcp_euler, OPEN, tol=0.03, angle_tol=1.0)
        yield wp(world.tcp + (0.0, 0.0, 0.06), world.tcp_euler, OPEN, tol=0.03, angle_tol=1.0)


def task_skill(world: World, task: str) -> Skill:
    yield from let_go_of_leftovers(world, task)
    yield from SKILLS[task](world)



def _skills() -> dict[str, Callable[[World], Skill]]:
    skills: dict[str, Callable[[World], Skill]] = {
        "move_slider_left": move_slider(+1),
        "move_slider_right": move_slider(-1),
        "open_drawer": open_drawer,
        "close_drawer": close_drawer,
        "turn_on_led": press_button(True),
        "turn_off_led": press_button(False),
        "turn_on_lightbulb": flip_switch(True),
        "turn_off_lightbulb": flip_switch(False),
        "place_in_slider": place_in_slider,
        "place_in_drawer": place_in_drawer,
        "stack_block": stack_block,
        "unstack_block": unstack_block,
        "push_into_drawer": push_into_drawer,
    }
    for c in BLOCK_COLORS:
        skills[f"rotate_{c}_block_right"] = rotate_block(c, -1)
        skills[f"rotate_{c}_block_left"] = rotate_block(c, +1)
        skills[f"push_{c}_block_right"] = push_block(c, +1)
        skills[f"push_{c}_block_left"] = push_block(c, -1)
        for surface in ("table", "slider", "drawer"):
            skills[f"lift_{c}_block_{surface}"] = lift(c, height=0.10)
    return skills


SKILLS = _skills()
