"""The expert's skills: one generator per CALVIN task, yielding waypoints.

A skill reads the current `World` (updated in place before it resumes), yields the next waypoint, and
looks again once that waypoint is reached or given up. That keeps each task's script readable top to
bottom and closed-loop: skills check the scene after acting and try again while the subtask lasts.
Geometry (docs/GEOMETRY.md) comes through `World` (handles, slots, slope frames).
"""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

from agents.scripted.control import CLOSE, OPEN, Waypoint, down, rotation_angle
from agents.scripted.world import Block, World
from harness.sim.layout import BLOCK_COLORS, EVAL_SLIDER_SLOTS, SCENES, SLOPE_AXIS, SLOPE_NORMAL, TABLE_TOP_Z
from harness.spatial import euler_to_matrix, matrix_to_euler, wrap_angle

Skill = Iterator[Waypoint]
NEUTRAL_YAW = np.pi / 2  # about the TCP's yaw at CALVIN's neutral pose (1.50): fingers open along world x
CRUISE_Z = 0.60  # travel height over the table: fingertips clear a stack of two blocks (top 0.52)
FINGER_HALF_THICKNESS = 0.0105  # along TCP x
FINGER_HALF_WIDTH = 0.027  # closed fingers, along TCP y
FINGER_TIP_BELOW_TCP = 0.015
ATTEMPTS = 3
HAND_DOOR_MARGIN = 0.13  # from a block at a slot (y 0.092) to the door's edge: the leaning hand is 20 cm long
HAND_WALL_MARGIN = 0.09  # from a spot in the bay to its side walls (measured at slider_right)
PLACE_Y = 0.065  # set blocks down nearer the front of the bay, where the hand stays clear of the door
PLACE_DOOR_MARGIN = 0.055  # from such a spot to the door's edge (measured: 0.05 works with a 4 cm block)


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
        yield from travel(world, hook, down(NEUTRAL_YAW), CLOSE, z=CRUISE_Z)
        pull = min(0.22 - world.drawer_q, target_q - world.drawer_q + 0.03)
        yield wp(hook - (0.0, pull, 0.0), down(NEUTRAL_YAW), CLOSE, speed=0.5, tol=0.01)
        yield wp(lifted(world.tcp, 0.50), down(NEUTRAL_YAW), CLOSE, tol=0.02)


def push_drawer_to(world: World, target_q: float) -> Skill:
    """Push the handle bar in with the closed fingers."""
    for _ in range(ATTEMPTS):
        if world.drawer_q <= target_q:
            return
        behind = world.drawer_handle() + (0.0, -0.0125 - FINGER_HALF_THICKNESS - 0.012, 0.005)
        yield from travel(world, behind, down(NEUTRAL_YAW), CLOSE, z=CRUISE_Z)
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
        if abs(error) < 0.01:
            return
        direction = 1 if error > 0 else -1
        # The bar spans u 0.12 .. 0.16 from the door's origin: push the face on the far side with the
        # closed fingers' edge (they are 5.4 cm wide along x at the neutral yaw, which keeps the hand's
        # long side parallel to the door instead of over it).
        half_width = 0.5 * max(world.gripper_width, 0.0) + FINGER_HALF_WIDTH  # wider around a held block
        u = 0.16 + half_width + 0.010 if direction > 0 else 0.12 - half_width - 0.010
        contact = world.door_point(u, -0.05, 0.0705)
        tcp = np.array([contact[0], contact[1] - 0.002, contact[2] + FINGER_TIP_BELOW_TCP])
        euler = down(NEUTRAL_YAW)
        yield from travel(world, tcp, euler, CLOSE, z=0.68)
        yield wp(tcp - (error + direction * 0.01, 0.0, 0.0), euler, CLOSE, speed=0.6, tol=0.01)
        yield wp(lifted(world.tcp, 0.68), euler, CLOSE, tol=0.02)


def move_slider(direction: int) -> Callable[[World], Skill]:
    """direction +1 slides the door left (to the end of its travel), -1 right."""

    def skill(world: World) -> Skill:
        yield from slide_door_to(world, world.layout.door_travel - 0.01 if direction > 0 else 0.01)

    return skill


def clear_slot(world: World, slot: np.ndarray) -> Skill:
    """Slide the door to the far end of its travel from a slider slot, unless it is already far enough
    that the hand (20 cm long, leaning back) can reach into the slot without touching it."""
    if not door_blocks(world, slot):
        return
    left_slot = slot[0] < world.layout.bay_center_x
    yield from slide_door_to(world, 0.0 if left_slot else world.layout.door_travel)


def press_button(want_on: bool) -> Callable[[World], Skill]:
    """Press the button with the closed fingers until the LED shows the wanted state."""

    def skill(world: World) -> Skill:
        for _ in range(ATTEMPTS):
            top = world.button_top()
            above = top + (0.0, 0.0, 0.06)
            yield from travel(world, above, down(NEUTRAL_YAW), CLOSE, z=CRUISE_Z)
            yield wp(top + (0.0, 0.0, FINGER_TIP_BELOW_TCP - 0.024), down(NEUTRAL_YAW), CLOSE, speed=0.5, tol=0.006, max_steps=25)
            yield wp(above, down(NEUTRAL_YAW), CLOSE, tol=0.01)
            if world.led_on == want_on:
                break

    return skill


SWITCH_GRASP = np.array([-2.0 * np.pi / 3.0, 0.0, 0.0])  # approach into the sloped face, fingers along the slope


def switch_grasp_u(world: World) -> float:
    """Where along the switch bar to grasp it (u; the posts stand at |u| 0.04..0.06): the spot whose
    approach path keeps the lower finger farthest from blocks standing in front of the switch."""
    xs = world.layout.switch_x
    near = [b for b in world.blocks() if -0.2 < b.pos[1] < 0.02 and abs(b.pos[0] - xs) < 0.12]
    if not near:
        return 0.0

    def clearance(u: float) -> float:
        return min(abs(xs + u - b.pos[0]) - footprint(b)[0] for b in near)

    return max((0.0, 0.025, -0.025), key=clearance)


def flip_switch(want_on: bool) -> Callable[[World], Skill]:
    """Grasp the switch bar from the front (fingers above and below it along the slope) and slide it."""

    def skill(world: World) -> Skill:
        for _ in range(ATTEMPTS):
            bar = world.switch_point(switch_grasp_u(world), 0.009, 0.0535)
            out = bar + 0.08 * SLOPE_NORMAL
            yield from travel(world, out, SWITCH_GRASP, OPEN, z=0.66)
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


WRIST_YAW_RANGE = 2.0  # TCP yaws this far from the neutral one stay well inside joint 7's limits


def grasp_yaw(block: Block, current_yaw: float = NEUTRAL_YAW) -> float:
    """The TCP yaw that closes the fingers across the block's 4 cm side (its local y; any side of a
    cube): of those within the wrist's comfortable range, the one the wrist turns to least."""
    period = np.pi / 2 if abs(block.extents[0] - block.extents[1]) < 1e-6 else np.pi
    candidates = [block.yaw + k * period for k in range(-4, 5)]
    comfortable = [y for y in candidates if abs(float(wrap_angle(y - NEUTRAL_YAW))) <= WRIST_YAW_RANGE]
    best = min(comfortable, key=lambda y: abs(float(wrap_angle(y - current_yaw))))
    return float(current_yaw + wrap_angle(best - current_yaw))


def in_bay(pos: np.ndarray) -> bool:
    return pos[1] > 0.03 and pos[2] < 0.56


# Reaching into the cabinet bay. Pointing straight down, the wrist (panda link 7) meets the roof beam
# over the bay, and at slider_right the 20 cm hand meets the side block 9 cm away. Leaning the gripper
# back by 0.6 rad (top toward the robot) keeps both clear, with the fingers still closing along x.
BAY_EULER = np.array([np.pi, -0.6, np.pi / 2])


def gripper_euler_at(pos: np.ndarray, block: Block | None = None, current_yaw: float = NEUTRAL_YAW) -> np.ndarray:
    """Orientation for working at pos: leaning into the bay, else pointing down across the block's
    4 cm side. Closing fingers turn a block that sits up to 22.5 deg off (CALVIN's slots draw yaw in
    pi/2 +- pi/8) into line with them."""
    if in_bay(pos):
        return BAY_EULER
    return down(grasp_yaw(block, current_yaw) if block is not None else NEUTRAL_YAW)


def grasp(world: World, color: str) -> Skill:
    """Open above the block, descend around it, close. Tries again while the block is not held."""
    for _ in range(ATTEMPTS):
        block = world.block(color)
        euler = gripper_euler_at(block.pos, block, float(world.tcp_euler[2]))
        above = block.pos + (0.0, 0.0, 0.10)
        yield from travel(world, above, euler, OPEN, z=max(CRUISE_Z, above[2]))
        block = world.block(color)
        euler = gripper_euler_at(block.pos, block, float(world.tcp_euler[2]))
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


def carry_euler(world: World, block: Block, block_yaw: float | None = None) -> np.ndarray:
    """The gripper orientation that holds `block` flat (roll = pitch = 0) at `block_yaw` (default: its
    yaw now). A block grasped in the bay is pinched by a leaning gripper; carried pointing straight
    down it would hang tilted and tip over where it is set down."""
    r_grip = euler_to_matrix(world.tcp_euler)
    in_gripper = r_grip.T @ euler_to_matrix(block.euler)
    yaw = block.yaw if block_yaw is None else block_yaw
    return matrix_to_euler(euler_to_matrix([0.0, 0.0, yaw]) @ in_gripper.T)


def held_pose_after(world: World, block: Block, euler: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For a held block, (its rotation, the TCP's offset from its centre) once the gripper turns to euler."""
    r_grip = euler_to_matrix(world.tcp_euler)
    in_gripper = r_grip.T @ euler_to_matrix(block.euler)
    centre_in_gripper = r_grip.T @ (block.pos - world.tcp)
    r_new = euler_to_matrix(euler)
    return r_new @ in_gripper, -(r_new @ centre_in_gripper)


def lowest_corner_below_centre(block: Block, rotation: np.ndarray) -> float:
    half = 0.5 * np.asarray(block.extents)
    corners = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]) * half
    return float(-(corners @ rotation.T)[:, 2].min())


def place_at(world: World, spot: np.ndarray, euler: np.ndarray | None = None, approach_z: float = CRUISE_Z) -> Skill:
    """Carry the held block over `spot` (x, y and the surface's height), lower it until its lowest
    corner is 5 mm above the surface, let go and back off upward."""
    block = held_or_nearest(world)
    euler = carry_euler(world, block) if euler is None else euler
    rotation, tcp_offset = held_pose_after(world, block, euler)
    centre = np.array([spot[0], spot[1], spot[2] + lowest_corner_below_centre(block, rotation) + 0.005])
    yield from travel(world, centre + tcp_offset, euler, CLOSE, z=approach_z)
    yield from release_and_retreat(world)


def free_table_spot(world: World, ignore: str) -> np.ndarray:
    """A point on the table top far from the other blocks and the button."""
    others = [b.pos[:2] for b in world.blocks() if b.color != ignore]
    others.append(world.button_top()[:2])
    candidates = [np.array([x, y]) for x in np.linspace(-0.30, 0.32, 32) for y in (-0.12, -0.07)]
    best = max(candidates, key=lambda c: min(float(np.linalg.norm(c - o)) for o in others))
    return np.array([best[0], best[1], TABLE_TOP_Z])


def regrasp_after(world: World, detour: Callable[[World], Skill]) -> Skill:
    """Set the held block down on the table, run `detour` with a free gripper, then take it again."""
    held = world.held_block()
    if held is None:
        yield from detour(world)
        return
    yield from place_at(world, free_table_spot(world, held.color), euler=carry_euler(world, held))
    yield wp(lifted(world.tcp, CRUISE_Z), world.tcp_euler, OPEN, tol=0.03, angle_tol=0.5)
    yield from detour(world)
    yield from grasp(world, held.color)
    yield wp(world.tcp + (0.0, 0.0, 0.06), world.tcp_euler, CLOSE, tol=0.015)


def bay_spot(world: World, held: Block | None) -> tuple[np.ndarray, float]:
    """Where in the bay to set the held block down, and the door's joint value that leaves room.

    CALVIN's slots first; where another block sits there (CALVIN's chains may send a third block into
    a bay that holds two), any x along the bay with room for the fingers and the hand. The door's
    current end of travel is preferred: moving it costs steps."""
    lay = world.layout
    shift = lay.bay[0] - SCENES["D"].bay[0]
    slots = [np.array(EVAL_SLIDER_SLOTS[n]) + (shift, 0.0, 0.0) for n in ("slider_left", "slider_right")]
    others = [b for b in world.blocks() if b.pos[1] > 0.03 and (held is None or b.color != held.color)]
    half = 0.5 * (held.extents[1] if held is not None else 0.04)  # fingers close across the 4 cm side
    xs = [s[0] for s in slots] + list(np.arange(lay.bay[0] + HAND_WALL_MARGIN, lay.bay[1] - HAND_WALL_MARGIN, 0.01))
    door_ends = sorted((0.0, lay.door_travel), key=lambda q: abs(q - world.door_q))
    for q in door_ends:
        lo, hi = lay.door_x_range(q)
        for x in xs:
            clear_of_door = hi < x - PLACE_DOOR_MARGIN or lo > x + PLACE_DOOR_MARGIN
            clear_of_walls = lay.bay[0] + HAND_WALL_MARGIN - 1e-6 <= x <= lay.bay[1] - HAND_WALL_MARGIN + 1e-6
            clear_of_blocks = all(abs(x - b.pos[0]) > half + 0.023 + 0.008 + b.footprint_half(np.array([1.0, 0, 0])) for b in others)
            if clear_of_door and clear_of_walls and clear_of_blocks:
                return np.array([x, PLACE_Y, slots[0][2]]), q
    return np.array([slots[0][0], PLACE_Y, slots[0][2]]), 0.0


def door_blocks(world: World, slot: np.ndarray, margin: float = HAND_DOOR_MARGIN) -> bool:
    lo, hi = world.layout.door_x_range(world.door_q)
    return not (hi < slot[0] - margin or lo > slot[0] + margin)


def place_in_slider(world: World) -> Skill:
    """Into a free spot of the bay, sliding the door out of the way first where it is in front of it
    (pushing its handle with the fingers closed around the block)."""
    held = world.held_block()
    spot, door_q = bay_spot(world, held)
    if abs(door_q - world.door_q) > 0.01 and door_blocks(world, spot, PLACE_DOOR_MARGIN):
        yield from slide_door_to(world, door_q)
    block = held_or_nearest(world)
    euler = carry_euler(world, block, NEUTRAL_YAW)
    if rotation_angle(euler, BAY_EULER) > 0.15:  # the hand must lean into the bay: let the block tilt
        euler = BAY_EULER
    yield from place_at(world, spot - (0.0, 0.0, 0.02), euler=euler, approach_z=0.60)


def place_in_drawer(world: World) -> Skill:
    if world.drawer_q < 0.11:
        yield from regrasp_after(world, lambda w: pull_drawer_to(w, 0.20))
    # the hand's long side along x (its short side toward the table's edge): a drawer opened only the
    # 0.12 m CALVIN counts as open leaves a 0.1 m gap, enough for the 8 cm block lying along y
    block = held_or_nearest(world)
    yield from place_at(world, world.drawer_inside() - (0.0, 0.0, 0.02), euler=carry_euler(world, block, np.pi / 2))


def stack_block(world: World) -> Skill:
    """Put the held block on top of a block lying on the table, turned to match it."""
    held = held_or_nearest(world)
    below = min((b for b in world.blocks() if b.color != held.color and world.on_table(b)),
                key=lambda b: float(np.linalg.norm(b.pos[:2] - held.pos[:2])), default=None)
    if below is None:
        return
    yaw = below.yaw + np.round((held.yaw - below.yaw) / (np.pi / 2)) * (np.pi / 2)
    euler = carry_euler(world, held, yaw)
    _, tcp_offset = held_pose_after(world, held, euler)
    target = below.pos + (0.0, 0.0, 0.5 * (below.extents[2] + held.extents[2]) + 0.004) + tcp_offset
    # up, out of the cabinet's zone when the block came from its bay (a diagonal move knocked it off the
    # fingers on the door's handle), across and above the block below
    yield from travel(world, lifted(target, CRUISE_Z), euler, CLOSE)
    yield wp(lifted(target, CRUISE_Z), euler, CLOSE, tol=0.01, angle_tol=0.05)
    yield wp(target, euler, CLOSE, speed=0.4, tol=0.006)
    yield from release_and_retreat(world, up=0.10)


def unstack_block(world: World) -> Skill:
    """Lift the upper block of a stack off the lower one."""
    top = max(world.blocks(), key=lambda b: b.pos[2])
    yield from lift(top.color, height=0.08)(world)


PUSH_DX = 0.125  # CALVIN counts a push from 0.1 m along x
PUSH_TIP_CLEARANCE = 0.007  # fingertips over the block's bottom face while pushing


def push_height(block: Block) -> float:
    """The TCP's height over the block's centre for a push. calvin_env's fingers taper to a 14 mm wide
    blade over their last 3 cm: pushed near its top a block slips off the side of the blade, so the
    fingertips run just over the table and the block meets the fingers where they are wider."""
    return PUSH_TIP_CLEARANCE - 0.5 * block.extents[2] + FINGER_TIP_BELOW_TCP


def push_block(color: str, direction: int) -> Callable[[World], Skill]:
    """Push a block on the table along world x (+1: right) with the closed fingers' flat side, drifting
    sideways where another block or the button's collar is in the way (or pushing only just over
    0.1 m where there is no room). The last part is slow: the subtask ends the moment the block has
    moved 0.1 m, and a fast arm would carry on into the next."""

    def skill(world: World) -> Skill:
        for _ in range(ATTEMPTS):
            block = world.block(color)
            start_x = block.pos[0]
            move = push_move(world, block, direction)
            u = move / np.linalg.norm(move)
            gap = block.footprint_half(u) + FINGER_HALF_THICKNESS + 0.02
            euler = down(float(np.arctan2(u[1], u[0])))  # the fingers' flat side faces the push
            start = block.pos - gap * u + (0.0, 0.0, push_height(block))
            yield from travel(world, start, euler, CLOSE, z=CRUISE_Z)
            yield wp(start + (gap - 0.01 + 0.7 * np.linalg.norm(move)) * u, euler, CLOSE, speed=0.5, tol=0.01)
            yield wp(start + (gap + np.linalg.norm(move)) * u, euler, CLOSE, speed=0.15, tol=0.006)
            yield wp(world.tcp - 0.03 * u, euler, CLOSE, tol=0.015)
            if direction * (world.block(color).pos[0] - start_x) > 0.1:
                break
        yield wp(lifted(world.tcp, 0.56), world.tcp_euler, CLOSE, tol=0.02)

    return skill


def footprint(block: Block) -> np.ndarray:
    """Half extents of the block's axis-aligned footprint on the table (x, y)."""
    return np.array([block.footprint_half(np.array([1.0, 0.0, 0.0])), block.footprint_half(np.array([0.0, 1.0, 0.0]))])


def push_move(world: World, block: Block, direction: int) -> np.ndarray:
    """The block's displacement for a push: PUSH_DX along x with a sideways drift that keeps it 1.5 cm
    clear of the other blocks and the button's collar (and on the table in front of the cabinet);
    where no drift clears them, only 0.108 m straight, stopping short of what is in the way."""
    obstacles = [(b.pos[:2], footprint(b)) for b in world.blocks()
                 if b.color != block.color and b.pos[2] < 0.5 and b.pos[1] < 0.03]
    obstacles.append((world.button_top()[:2], np.array([0.04, 0.04])))
    half = footprint(block)
    for dx, dy in [(PUSH_DX, dy) for dy in (0.0, 0.04, -0.04, 0.07, -0.07, 0.09, -0.09, 0.11)] + [(0.108, 0.0)]:
        y_end = block.pos[1] + dy
        if not -0.165 + half[1] < y_end < 0.015 - half[1]:  # the table's front edge; the cabinet's foot
            continue
        path = [block.pos[:2] + t * np.array([direction * dx, dy]) for t in np.linspace(0.1, 1.1, 12)]
        if all(np.any(np.abs(p - c) >= h + half + 0.015) for p in path for c, h in obstacles):
            return np.array([direction * dx, dy, 0.0])
    return np.array([direction * 0.108, 0.0, 0.0])


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
    """Push the block lying on the table toward the robot, off the table's edge into the open drawer;
    again from where it lies when it slipped off the fingers' side (calvin_env's slim fingertips)."""
    yield from pull_drawer_to(world, 0.11)
    for _ in range(ATTEMPTS):
        block = next((b for b in world.blocks() if world.on_table(b)), None)
        if block is None:
            return
        inside = world.drawer_inside()
        dx = float(np.clip(inside[0] - block.pos[0], -0.08, 0.08))
        side = block.footprint_half(np.array([0.0, 1.0, 0.0]))
        start = block.pos + (0.0, side + FINGER_HALF_THICKNESS + 0.02, push_height(block))
        yield from travel(world, start, down(NEUTRAL_YAW), CLOSE, z=CRUISE_Z)
        edge = start + (dx, -0.10 - (block.pos[1] + 0.18) - 0.02, 0.0)  # until the block's centre is past y -0.18
        yield wp(edge, down(NEUTRAL_YAW), CLOSE, speed=0.4, tol=0.01)
        yield wp(lifted(world.tcp, 0.56), down(NEUTRAL_YAW), CLOSE, tol=0.02)


# ---------------------------------------------------------------------------------------- registry

NEEDS_HELD_BLOCK = {"place_in_slider", "place_in_drawer", "stack_block"}


def put_aside(world: World, held: Block) -> Skill:
    """A block held just over the block it was lifted off (unstack_block counts the moment they part): let go
    there, it falls back onto the stack. It is set down on the table where the other blocks and the button are
    farthest (`free_table_spot`, as `regrasp_after` does)."""
    below = any(b.color != held.color and b.pos[2] < held.pos[2] and np.linalg.norm(b.pos[:2] - held.pos[:2]) < 0.04
                for b in world.blocks())
    if below:
        yield from place_at(world, free_table_spot(world, held.color), euler=carry_euler(world, held))


def let_go_of_leftovers(world: World, task: str) -> Skill:
    """A subtask ends the moment its predicate holds, often mid-skill: a rotated block still in the
    fingers, the hand down by a handle. Before a task that does not use a held block, let go of it (a block
    lifted off a stack first put aside)."""
    if task in NEEDS_HELD_BLOCK:
        return
    held = world.held_block()
    if held is not None:
        yield from put_aside(world, held)
    between_fingers = any(np.linalg.norm(b.pos - world.tcp) < 0.035 for b in world.blocks())
    holding = world.robot_obs[14] < 0 and world.gripper_width > 0.005  # a block, a handle, the switch
    if between_fingers or holding or world.tcp[2] < 0.50:  # the next skill may close the gripper on its way
        approach = euler_to_matrix(world.tcp_euler)[:, 2]  # where the fingers point: back out the other way
        yield wp(world.tcp, world.tcp_euler, OPEN, tol=0.03, angle_tol=1.0)
        yield wp(world.tcp - 0.06 * approach, world.tcp_euler, OPEN, tol=0.03, angle_tol=1.0)


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
