"""Generates the built-in scene's geometry files from the measured layout (docs/GEOMETRY.md).

Run `python -m harness.sim.urdf_builder` to (re)write `harness/sim/assets/`. The files are committed, and
a test checks that they match what this module generates, so the package always carries the geometry it
was built from. Everything is boxes, cylinders, spheres and convex prisms: low triangle counts keep
TinyRenderer fast (docs/CALVIN.md#rendering-cost).

Table link order (PyBullet link indices) is calvin_env's: button 0, switch 1, slide 2, drawer 3, led 4,
light 5, plank 6, base -1.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence
from xml.sax.saxutils import quoteattr

import numpy as np

from harness.sim.layout import (
    ARM_JOINT_LIMITS,
    BLOCK_COLORS,
    BLOCK_EXTENTS,
    BLOCK_RGBA,
    BUTTON_TRAVEL,
    CABINET_TOP_Z,
    DRAWER_TRAVEL,
    FINGER_JOINT_Z,
    FINGER_SECTIONS,
    GEL_BASE_X,
    GEL_SECTIONS,
    GEL_TIP_ORIGIN,
    GRASP_TARGET_Z,
    GRIPPER_CAM_BOX,
    GRIPPER_CAM_ORIGIN,
    ROBOT_INERTIALS,
    SCENES,
    SWITCH_TRAVEL,
    TABLE_TOP_Z,
    SceneLayout,
)

ASSETS_DIR = Path(__file__).parent / "assets"
SLOPE_RPY = (math.radians(60.0), 0.0, 0.0)  # slope frame: local y = up the face, local z = outward normal
SLOPE_TAN = math.tan(math.radians(30.0))  # the cabinet face leans back 30 deg from vertical
HANDLE_GREY = (101 / 255, 101 / 255, 101 / 255, 1.0)
BUTTON_BLACK = (0.0, 0.0, 0.0, 1.0)
SWITCH_GREY = (0.4, 0.4, 0.4, 1.0)
LIGHT_OFF_WHITE = (1.0, 1.0, 1.0, 1.0)
COLLAR_SIDES = 12
COLLAR_RADII = (0.030, 0.040)  # the button collar's inner and outer corner radii
GROOVE_SHADE = 0.88  # the switch grooves' brightness relative to the wood around them (calvin_env's render)
INVISIBLE_VISUAL = '<visual><geometry><sphere radius="0.001"/></geometry><material name="invisible"><color rgba="0 0 0 0"/></material></visual>'


def rgb255(c: tuple[int, int, int]) -> tuple[float, float, float, float]:
    return (c[0] / 255, c[1] / 255, c[2] / 255, 1.0)


def fmt(values: tuple[float, ...] | list[float]) -> str:
    return " ".join(f"{v:.6g}" for v in values)


# --------------------------------------------------------------------------------------------------
# Shapes


@dataclass(frozen=True)
class Shape:
    """One visual+collision element of a link, in the link frame."""

    kind: str  # "box" | "cylinder" | "sphere" | "mesh"
    xyz: tuple[float, float, float]
    size: tuple[float, ...] = ()  # box: full extents; cylinder: (radius, length); sphere: (radius,)
    rpy: tuple[float, float, float] = (0.0, 0.0, 0.0)
    rgba: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    mesh: str = ""  # path relative to the assets folder
    collision: bool = True
    visual: bool = True

    def geometry_xml(self) -> str:
        if self.kind == "box":
            return f'<box size="{fmt(self.size)}"/>'
        if self.kind == "cylinder":
            return f'<cylinder radius="{self.size[0]:.6g}" length="{self.size[1]:.6g}"/>'
        if self.kind == "sphere":
            return f'<sphere radius="{self.size[0]:.6g}"/>'
        return f"<mesh filename={quoteattr(self.mesh)}/>"


def box(lo: tuple[float, float, float], hi: tuple[float, float, float], rgba, origin=(0.0, 0.0, 0.0), **kw) -> Shape:
    """An axis-aligned box given by world corners, expressed relative to a link origin."""
    centre = tuple((a + b) / 2 - o for a, b, o in zip(lo, hi, origin))
    size = tuple(b - a for a, b in zip(lo, hi))
    if min(size) <= 0:
        raise ValueError(f"degenerate box {lo} .. {hi}")
    return Shape("box", centre, size, rgba=rgba, **kw)


def slope_box(u: tuple[float, float], s: tuple[float, float], n: tuple[float, float], rgba, **kw) -> Shape:
    """A box given by ranges along the slope frame axes (u = x, s = up the face, n = outward normal),
    relative to a link whose frame is the slope frame."""
    centre = ((u[0] + u[1]) / 2, (s[0] + s[1]) / 2, (n[0] + n[1]) / 2)
    size = (u[1] - u[0], s[1] - s[0], n[1] - n[0])
    return Shape("box", centre, size, rgba=rgba, **kw)


@dataclass
class Link:
    name: str
    mass: float
    shapes: list[Shape] = field(default_factory=list)
    friction: float = 0.5

    def inertia_xml(self) -> str:
        # A solid box over the shapes' bounding extents: good enough for links that only translate.
        if self.mass == 0:
            return '<inertial><mass value="0"/><inertia ixx="0" ixy="0" ixz="0" iyy="0" iyz="0" izz="0"/></inertial>'
        lo = [min(s.xyz[i] - shape_half(s, i) for s in self.shapes) for i in range(3)]
        hi = [max(s.xyz[i] + shape_half(s, i) for s in self.shapes) for i in range(3)]
        d = [max(h - l, 1e-3) for l, h in zip(lo, hi)]
        c = [(l + h) / 2 for l, h in zip(lo, hi)]
        m = self.mass
        ixx, iyy, izz = m * (d[1] ** 2 + d[2] ** 2) / 12, m * (d[0] ** 2 + d[2] ** 2) / 12, m * (d[0] ** 2 + d[1] ** 2) / 12
        return (
            f'<inertial><origin xyz="{fmt(c)}" rpy="0 0 0"/><mass value="{m:.6g}"/>'
            f'<inertia ixx="{ixx:.6g}" ixy="0" ixz="0" iyy="{iyy:.6g}" iyz="0" izz="{izz:.6g}"/></inertial>'
        )

    def xml(self) -> str:
        parts = [f"  <link name={quoteattr(self.name)}>", f"    {self.inertia_xml()}"]
        parts.append(
            f'    <contact><lateral_friction value="{self.friction:.6g}"/><rolling_friction value="0"/>'
            '<spinning_friction value="0"/><restitution value="0"/></contact>'
        )
        if not any(s.visual for s in self.shapes):
            # PyBullet draws the collision shapes of a link that has no visual; a transparent speck
            # (alpha 0 is skipped by the renderer) keeps physics-only links invisible
            parts.append(f"    {INVISIBLE_VISUAL}")
        for s in self.shapes:
            origin = f'<origin xyz="{fmt(s.xyz)}" rpy="{fmt(s.rpy)}"/>'
            if s.visual:
                parts.append(
                    f"    <visual>{origin}<geometry>{s.geometry_xml()}</geometry>"
                    f'<material name="m{color_key(s.rgba)}"><color rgba="{fmt(s.rgba)}"/></material></visual>'
                )
            if s.collision:
                parts.append(f"    <collision>{origin}<geometry>{s.geometry_xml()}</geometry></collision>")
        parts.append("  </link>")
        return "\n".join(parts)


def shape_half(s: Shape, axis: int) -> float:
    if s.kind == "box":
        return s.size[axis] / 2
    if s.kind in ("cylinder", "sphere"):
        return s.size[0]
    return 0.05  # meshes: only used for a rough inertia


def color_key(rgba: tuple[float, ...]) -> str:
    return "%08x" % zlib.crc32(fmt(rgba).encode())


@dataclass(frozen=True)
class Joint:
    name: str
    kind: str  # "prismatic" | "fixed"
    child: str
    xyz: tuple[float, float, float]
    rpy: tuple[float, float, float] = (0.0, 0.0, 0.0)
    axis: tuple[float, float, float] = (1.0, 0.0, 0.0)
    upper: float = 0.0

    def xml(self, parent: str) -> str:
        body = (
            f'  <joint name={quoteattr(self.name)} type="{self.kind}"><parent link={quoteattr(parent)}/>'
            f'<child link={quoteattr(self.child)}/><origin xyz="{fmt(self.xyz)}" rpy="{fmt(self.rpy)}"/>'
        )
        if self.kind == "prismatic":
            body += (
                f'<axis xyz="{fmt(self.axis)}"/><limit lower="0" upper="{self.upper:.6g}" effort="1000" velocity="10"/>'
                '<dynamics damping="0" friction="0"/>'
            )
        return body + "</joint>"


def robot_xml(name: str, base: Link, children: list[tuple[Joint, Link]]) -> str:
    lines = ['<?xml version="1.0"?>', "<!-- generated by harness.sim.urdf_builder; do not edit -->", f"<robot name={quoteattr(name)}>"]
    lines.append(base.xml())
    for joint, link in children:
        lines.append(link.xml())
        lines.append(joint.xml(base.name))
    lines.append("</robot>")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------
# Meshes (convex prisms for the cabinet's sloped side blocks, a faceted ring for the button collar)


def prism_obj(profile_yz: list[tuple[float, float]], x0: float, x1: float) -> str:
    """An OBJ of a prism: a convex polygon in the (y, z) plane extruded from x0 to x1 (world coords)."""
    n = len(profile_yz)
    verts = [(x, y, z) for x in (x0, x1) for (y, z) in profile_yz]
    faces = []
    for i in range(n):  # side quads as two triangles each
        a, b = i, (i + 1) % n
        faces += [(a, b, b + n), (a, b + n, a + n)]
    for i in range(1, n - 1):  # end caps
        faces += [(0, i + 1, i), (n, n + i, n + i + 1)]
    return obj_text(verts, faces)


def ring_obj(cx: float, cy: float, r_in: float, r_out: float, z0: float, z1: float, segments: int) -> str:
    verts, faces = [], []
    for k in range(segments):
        t = 2 * math.pi * k / segments
        for r in (r_in, r_out):
            for z in (z0, z1):
                verts.append((cx + r * math.cos(t), cy + r * math.sin(t), z))
    for k in range(segments):
        a, b = 4 * k, 4 * ((k + 1) % segments)
        in_lo, in_hi, out_lo, out_hi = a, a + 1, a + 2, a + 3
        nin_lo, nin_hi, nout_lo, nout_hi = b, b + 1, b + 2, b + 3
        faces += [
            (out_lo, nout_lo, nout_hi), (out_lo, nout_hi, out_hi),  # outer wall
            (in_lo, in_hi, nin_hi), (in_lo, nin_hi, nin_lo),  # inner wall
            (in_hi, out_hi, nout_hi), (in_hi, nout_hi, nin_hi),  # top
            (in_lo, nin_lo, nout_lo), (in_lo, nout_lo, out_lo),  # bottom
        ]
    return obj_text(verts, faces)


def hemisphere_obj(radius: float, rings: int = 6, segments: int = 16) -> str:
    """An upper hemisphere (convex) centred at the origin: the light bulb's cap."""
    verts = [(0.0, 0.0, radius)]
    for r in range(1, rings + 1):
        phi = (math.pi / 2) * r / rings
        for k in range(segments):
            t = 2 * math.pi * k / segments
            verts.append((radius * math.sin(phi) * math.cos(t), radius * math.sin(phi) * math.sin(t), radius * math.cos(phi)))
    faces = [(0, 1 + k, 1 + (k + 1) % segments) for k in range(segments)]
    for r in range(rings - 1):
        a, b = 1 + r * segments, 1 + (r + 1) * segments
        for k in range(segments):
            k1 = (k + 1) % segments
            faces += [(a + k, b + k, b + k1), (a + k, b + k1, a + k1)]
    base = 1 + (rings - 1) * segments
    faces += [(base, base + k1, base + k) for k, k1 in ((k, (k + 1) % segments) for k in range(1, segments - 1))]
    return obj_text(verts, faces)


def obj_text(verts: list[tuple[float, float, float]], faces: list[tuple[int, int, int]]) -> str:
    lines = ["# generated by harness.sim.urdf_builder"]
    lines += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in verts]
    lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in faces]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------
# The table


def front_plane_y(z: float) -> float:
    """y of the sloped cabinet front at height z (the plane through y = 0.02, z = 0.44, 30 deg back)."""
    return 0.02 + SLOPE_TAN * (z - TABLE_TOP_Z)


def table_base(lay: SceneLayout) -> Link:
    """The static body's physics: docs/GEOMETRY.md#base-body exactly (slab with the plank recess, carcass with
    the drawer cavity, legs, back wall, the sloped cabinet sides and roof, the button collar)."""
    wood = rgb255(lay.wood_body)
    bx0, bx1 = lay.bay
    xd = lay.drawer_x
    shapes = [
        box((-0.44, -0.18, 0.40), (0.44, 0.18, 0.42), wood),
        box((-0.44, -0.18, 0.42), (0.44, 0.02, 0.44), wood),
        box((-0.44, 0.16, 0.42), (0.44, 0.18, 0.44), wood),
        box((-0.44, 0.02, 0.42), (bx0, 0.16, 0.44), wood),
        box((bx1, 0.02, 0.42), (0.44, 0.16, 0.44), wood),
        box((-0.42, -0.16, 0.30), (xd - 0.20, 0.16, 0.40), wood),
        box((xd + 0.20, -0.16, 0.30), (0.42, 0.16, 0.40), wood),
        box((xd - 0.20, -0.16, 0.30), (xd + 0.20, 0.06, 0.32), wood),
        box((xd - 0.20, 0.06, 0.30), (xd + 0.20, 0.16, 0.40), wood),
        box((-0.44, 0.16, 0.44), (0.44, 0.18, CABINET_TOP_Z), wood),
        *(box((x0, y0, 0.0), (x1, y1, 0.40), wood) for x0, x1 in ((-0.44, -0.40), (0.40, 0.44)) for y0, y1 in ((-0.18, -0.148), (0.148, 0.18))),
    ]
    shapes += [Shape("mesh", (0, 0, 0), mesh=path) for path in table_base_collision_meshes(lay)]
    # the button collar, a 12-sided ring in calvin_env (corners at 0, 30, ... deg, 30 and 40 mm out;
    # docs/FIDELITY.md#3-table): a ring is not convex, so one box per side, its outer corners on the ring's
    for k in range(COLLAR_SIDES):
        t = 2 * math.pi * (k + 0.5) / COLLAR_SIDES
        half_angle = math.pi / COLLAR_SIDES
        depth = (COLLAR_RADII[1] - COLLAR_RADII[0]) * math.cos(half_angle)
        r = COLLAR_RADII[1] * math.cos(half_angle) - depth / 2
        cx, cy = lay.button_x + r * math.cos(t), -0.12 + r * math.sin(t)
        chord = 2 * COLLAR_RADII[1] * math.sin(half_angle)
        shapes.append(Shape("box", (cx, cy, 0.45), (depth, chord, 0.02), rpy=(0, 0, t)))
    return Link("base_link", 0.0, [replace(s, visual=False) for s in shapes], friction=0.5)


def table_base_collision_meshes(lay: SceneLayout) -> dict[str, str]:
    """The convex prisms of the cabinet: two sloped side blocks and the roof beam over the bay."""
    side = [(0.02, 0.44), (0.18, 0.44), (0.18, CABINET_TOP_Z), (front_plane_y(CABINET_TOP_Z), CABINET_TOP_Z)]
    roof = [(front_plane_y(0.628), 0.628), (0.16, 0.628), (0.16, CABINET_TOP_Z), (front_plane_y(CABINET_TOP_Z), CABINET_TOP_Z)]
    return {
        f"meshes/table_{lay.name}_side_left.obj": prism_obj(side, -0.44, lay.bay[0]),
        f"meshes/table_{lay.name}_side_right.obj": prism_obj(side, lay.bay[1], 0.44),
        f"meshes/table_{lay.name}_roof.obj": prism_obj(roof, lay.bay[0], lay.bay[1]),
    }


Quad = tuple[tuple[float, float, float], ...]


def rect(axis: int, value: float, lo: tuple[float, float], hi: tuple[float, float], outward: int) -> tuple[Quad, tuple[float, float, float]]:
    """An axis-aligned rectangle at coordinate `value` on `axis`, spanning lo..hi on the other two axes
    (in increasing axis order), with its outward normal along +axis (outward=1) or -axis (-1)."""
    others = [i for i in range(3) if i != axis]
    corners = []
    for a, b in ((lo[0], lo[1]), (hi[0], lo[1]), (hi[0], hi[1]), (lo[0], hi[1])):
        pt = [0.0, 0.0, 0.0]
        pt[axis], pt[others[0]], pt[others[1]] = value, a, b
        corners.append(tuple(pt))
    normal = [0.0, 0.0, 0.0]
    normal[axis] = float(outward)
    return tuple(corners), tuple(normal)


def shell_faces(lay: SceneLayout) -> list[tuple[Quad, tuple[float, float, float]]]:
    """The faces of the static base that a camera can see, as (quad, outward normal).

    TinyRenderer has no back-face culling and shades every covered pixel of every triangle, hidden or
    not (its cost: docs/CALVIN.md#rendering-cost), so the shell's visual is built from the visible faces
    only: no bottoms, no backs (both cameras are always in front of the table and above its top), nothing covered by
    another part (the slab top under the plank and the cabinet, the carcass and leg tops under the slab).
    The physics body keeps the full solids."""
    bx0, bx1 = lay.bay
    z_top, z_cab = TABLE_TOP_Z, CABINET_TOP_Z
    faces = [
        # carcass under the top: front and both ends
        rect(1, -0.16, (-0.42, 0.30), (0.42, 0.40), -1),
        rect(0, -0.42, (-0.16, 0.30), (0.16, 0.40), -1),
        rect(0, 0.42, (-0.16, 0.30), (0.16, 0.40), 1),
        # slab: the uncovered front strip of the top, the front edge, both ends
        rect(2, z_top, (-0.44, -0.18), (0.44, 0.02), 1),
        rect(1, -0.18, (-0.44, 0.40), (0.44, z_top), -1),
        rect(0, -0.44, (-0.18, 0.40), (0.18, z_top), -1),
        rect(0, 0.44, (-0.18, 0.40), (0.18, z_top), 1),
        # back wall inside the bay, under the roof
        rect(1, 0.16, (bx0, z_top), (bx1, 0.628), -1),
        # bay ends of the two side blocks and the roof's underside
        rect(0, bx0, (0.02, z_top), (0.18, z_cab), 1),
        rect(0, bx1, (0.02, z_top), (0.18, z_cab), -1),
        rect(2, 0.628, (bx0, front_plane_y(0.628)), (bx1, 0.16), -1),
        # cabinet top and the outer ends of the cabinet (side blocks over the slab ends)
        rect(2, z_cab, (-0.44, front_plane_y(z_cab)), (0.44, 0.18), 1),
    ]
    # the two outer ends of the side blocks: trapezoids in the y-z plane
    trapezoid = [(0.02, z_top), (0.18, z_top), (0.18, z_cab), (front_plane_y(z_cab), z_cab)]
    for x, sign in ((-0.44, -1), (0.44, 1)):
        faces.append((tuple((x, y, z) for y, z in trapezoid), (float(sign), 0.0, 0.0)))
    # the sloped cabinet front beside the bay, and the roof beam's sloped front
    slope_normal = (0.0, -0.8660254, 0.5)
    for x0, x1, z0 in ((-0.44, bx0, z_top), (bx1, 0.44, z_top), (bx0, bx1, 0.628)):
        quad = ((x0, front_plane_y(z0), z0), (x1, front_plane_y(z0), z0), (x1, front_plane_y(z_cab), z_cab), (x0, front_plane_y(z_cab), z_cab))
        faces.append((quad, slope_normal))
    # legs: front and both ends (their tops are under the slab, their backs face away)
    for x0, x1 in ((-0.44, -0.40), (0.40, 0.44)):
        for y0, y1 in ((-0.18, -0.148), (0.148, 0.18)):
            faces += [rect(1, y0, (x0, 0.0), (x1, 0.40), -1), rect(0, x0, (y0, 0.0), (y1, 0.40), -1), rect(0, x1, (y0, 0.0), (y1, 0.40), 1)]
    return faces


def faces_obj(faces: list[tuple[Quad, tuple[float, float, float]]], eye: tuple[float, float, float]) -> str:
    """Quads as an OBJ with explicit normals and outward (counter-clockwise) winding, sorted nearest
    first as seen from `eye`, so that later, hidden fragments fail the depth test instead of being shaded.
    Texture coordinates project each quad onto its plane (1 = 2 m), for a texture the robustness suite's
    texture axis puts on it; drawn without one, the coordinates change nothing."""
    ordered = sorted(faces, key=lambda f: float(np.linalg.norm(np.mean(f[0], axis=0) - np.asarray(eye))))
    lines = ["# generated by harness.sim.urdf_builder"]
    for k, (quad, normal) in enumerate(ordered):
        pts = np.asarray(quad, dtype=float)
        if np.dot(np.cross(pts[1] - pts[0], pts[2] - pts[0]), normal) < 0:
            pts = pts[::-1]
        lines += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in pts]
        in_plane = [a for a in range(3) if a != int(np.argmax(np.abs(normal)))]
        lines += [f"vt {(p[in_plane[0]] + 1) / 2:.6f} {(p[in_plane[1]] + 1) / 2:.6f}" for p in pts]
        lines.append(f"vn {normal[0]:.6f} {normal[1]:.6f} {normal[2]:.6f}")
        v, n = 4 * k, k + 1
        lines += [f"f {v + 1}/{v + 1}/{n} {v + 2}/{v + 2}/{n} {v + 3}/{v + 3}/{n}",
                  f"f {v + 1}/{v + 1}/{n} {v + 3}/{v + 3}/{n} {v + 4}/{v + 4}/{n}"]
    return "\n".join(lines) + "\n"


def table_shell(lay: SceneLayout) -> tuple[Link, dict[str, str]]:
    """The static base's visual, as its own visual-only body (see table_urdf)."""
    from harness.sim.cameras import STATIC_EYE

    groove = (*(GROOVE_SHADE * c for c in rgb255(lay.wood_body)[:3]), 1.0)
    meshes = {
        f"meshes/table_{lay.name}_shell.obj": faces_obj(shell_faces(lay), STATIC_EYE),
        f"meshes/table_{lay.name}_collar.obj": ring_obj(lay.button_x, -0.12, *COLLAR_RADII, 0.44, 0.46, COLLAR_SIDES),
    }
    shapes = [
        # calvin_env's collar is part of the wood body; its grooves are barely darker than the face
        # around them (docs/FIDELITY.md#4-appearance-tinyrenderer)
        Shape("mesh", (0, 0, 0), mesh=f"meshes/table_{lay.name}_collar.obj", rgba=rgb255(lay.wood_body), collision=False),
        *(
            Shape("box", slope_point(lay.switch_x + du, 0.03, -0.0035), (0.02, 0.12, 0.008), rpy=SLOPE_RPY, rgba=groove, collision=False)
            for du in (-0.05, 0.05)
        ),
        Shape("mesh", (0, 0, 0), mesh=f"meshes/table_{lay.name}_shell.obj", rgba=rgb255(lay.wood_body), collision=False),
    ]
    return Link("base_link", 0.0, shapes), meshes


def slope_point(x: float, s: float, n: float) -> tuple[float, float, float]:
    """World point at slope coordinates (u = x, s, n) from the face origin (x, 0.02, 0.44)."""
    return (x, 0.02 + 0.5 * s - 0.8660254 * n, 0.44 + 0.8660254 * s + 0.5 * n)


def table_links(lay: SceneLayout) -> list[tuple[Joint, Link]]:
    xd, xb, xs = lay.drawer_x, lay.button_x, lay.switch_x
    door_wood, plank_wood = rgb255(lay.wood_door), rgb255(lay.wood_plank)
    # button: link origin at (Xb, -0.12, 0.46), cylinder r 0.032 from z 0.460 to 0.484
    button = Link("button_link", 0.154, [Shape("cylinder", (0, 0, 0.012), (0.032, 0.024), rgba=BUTTON_BLACK)])
    # switch (slope frame), origin (Xs, 0.0609, 0.4949), a U-pull: bar + two posts
    switch = Link("switch_link", 0.239, [
        slope_box((-0.06, 0.06), (-0.008, 0.026), (0.042, 0.065), SWITCH_GREY),
        slope_box((-0.06, -0.04), (-0.008, 0.026), (0.0, 0.042), SWITCH_GREY),
        slope_box((0.04, 0.06), (-0.008, 0.026), (0.0, 0.042), SWITCH_GREY),
    ])
    # sliding door (slope frame), origin (door x, 0.075, 0.5353): panel + U-pull handle
    door = Link("slide_link", 1.543, [
        slope_box((0.0, 0.281), (-0.121, 0.120), (0.0, 0.0225), door_wood),
        slope_box((0.12, 0.16), (-0.08, 0.08), (0.060, 0.081), HANDLE_GREY),
        slope_box((0.12, 0.16), (-0.08, -0.06), (0.0225, 0.060), HANDLE_GREY),
        slope_box((0.12, 0.16), (0.06, 0.08), (0.0225, 0.060), HANDLE_GREY),
    ])
    # drawer, origin (Xd, 0, 0.32): front panel, tray (bottom, sides, back), U-pull handle
    o = (xd, 0.0, 0.32)
    drawer = Link("drawer_link", 4.231, [
        box((xd - 0.221, -0.183, 0.299), (xd + 0.221, -0.156, 0.402), door_wood, origin=o),
        box((xd - 0.2025, -0.158, 0.3175), (xd + 0.2025, 0.062, 0.3424), door_wood, origin=o),
        box((xd - 0.2025, -0.158, 0.3175), (xd - 0.176, 0.062, 0.402), door_wood, origin=o),
        box((xd + 0.176, -0.158, 0.3175), (xd + 0.2025, 0.062, 0.402), door_wood, origin=o),
        box((xd - 0.176, 0.037, 0.3175), (xd + 0.176, 0.062, 0.402), door_wood, origin=o),
        box((xd - 0.122, -0.262, 0.339), (xd + 0.122, -0.237, 0.381), HANDLE_GREY, origin=o),
        box((xd - 0.122, -0.237, 0.339), (xd - 0.095, -0.183, 0.381), HANDLE_GREY, origin=o),
        box((xd + 0.095, -0.237, 0.339), (xd + 0.122, -0.183, 0.381), HANDLE_GREY, origin=o),
    ])
    led_o = (lay.led_x, 0.16, CABINET_TOP_Z)
    led = Link("led_link", 0.204, [box((lay.led_x - 0.08, 0.14, 0.648), (lay.led_x + 0.08, 0.18, 0.664), LIGHT_OFF_WHITE, origin=led_o)])
    bulb_o = (lay.bulb_x, 0.16, CABINET_TOP_Z)
    light = Link("light_link", lay.light_mass, [
        Shape("cylinder", (0, 0, 0.011), (0.028, 0.022), rgba=LIGHT_OFF_WHITE),
        Shape("mesh", (0, 0, 0.022), mesh="meshes/bulb_cap.obj", rgba=LIGHT_OFF_WHITE),
    ])
    plank_o = ((lay.bay[0] + lay.bay[1]) / 2, 0.09, 0.42)
    # Blocks rest 1 mm higher on calvin_env's plank than on the table (centre 0.461, not 0.460:
    # docs/GEOMETRY.md#blocks), so its collision top is at 0.441. The visual follows it, which also keeps it
    # off the depth of the shell's slab top.
    plank = Link("plank_link", 2.844, [box((lay.bay[0], 0.02, 0.42), (lay.bay[1], 0.16, 0.441), plank_wood, origin=plank_o)])
    return [
        (Joint("base__button", "prismatic", "button_link", (xb, -0.12, 0.46), axis=(0, 0, -1), upper=BUTTON_TRAVEL), button),
        (Joint("base__switch", "prismatic", "switch_link", (xs, 0.0609, 0.4949), rpy=SLOPE_RPY, axis=(0, 1, 0), upper=SWITCH_TRAVEL), switch),
        (Joint("base__slide", "prismatic", "slide_link", (lay.door_origin_x, 0.075, 0.5353), rpy=SLOPE_RPY, axis=(-1, 0, 0), upper=lay.door_travel), door),
        (Joint("base__drawer", "prismatic", "drawer_link", o, axis=(0, -1, 0), upper=DRAWER_TRAVEL), drawer),
        (Joint("base__led", "fixed", "led_link", led_o), led),
        (Joint("base__light", "fixed", "light_link", bulb_o), light),
        (Joint("base__plank", "fixed", "plank_link", plank_o), plank),
    ]


def table_urdf(lay: SceneLayout) -> tuple[str, str, dict[str, str]]:
    """The table URDF of one scene, its shell URDF and their mesh files {relative path: OBJ text}.

    The table body carries the physics and the moving links. The static base's visual is a separate
    visual-only "shell" body that the scene loads after the table: TinyRenderer draws bodies in load
    order, and drawing the base after the drawer front, door and switch that stand in front of it lets
    its hidden fragments fail the depth test instead of being shaded and overdrawn."""
    shell, meshes = table_shell(lay)
    meshes.update(table_base_collision_meshes(lay))
    table = robot_xml(f"calvin_table_{lay.name}", table_base(lay), table_links(lay))
    return table, robot_xml(f"calvin_table_{lay.name}_shell", shell, []), meshes


# --------------------------------------------------------------------------------------------------
# Blocks and the ground


def block_urdf(color: str, size: str) -> str:
    ext = BLOCK_EXTENTS[size]
    link = Link("base_link", 1.0, [Shape("box", (0, 0, 0), ext, rgba=BLOCK_RGBA[color])], friction=0.7)
    return robot_xml(f"block_{color}_{size}", link, [])


FLOOR_HALF = 3.0  # the floor is drawn out to here; beyond it neither camera sees it (gripper far = 2 m)
FLOOR_SQUARE = 0.5  # the checker's squares
FLOOR_COLORS = {"light": (1.0, 1.0, 1.0, 1.0), "dark": (222 / 255, 222 / 255, 222 / 255, 1.0)}


def floor_obj(parity: int) -> str:
    """The light (0) or dark (1) squares of the ground's 0.5 m checker, as one flat mesh at z = 0.
    Two untextured meshes shade faster in TinyRenderer than one textured quad. calvin_env's floor has a
    dark square where x and y both start at a multiple of 1 m
    (docs/FIDELITY.md#4-appearance-tinyrenderer)."""
    n = int(round(2 * FLOOR_HALF / FLOOR_SQUARE))
    verts, faces = [], []
    for i in range(n):
        for j in range(n):
            if (i + j + 1) % 2 != parity:
                continue
            x0, y0 = -FLOOR_HALF + i * FLOOR_SQUARE, -FLOOR_HALF + j * FLOOR_SQUARE
            k = len(verts)
            verts += [(x0, y0, 0.0), (x0 + FLOOR_SQUARE, y0, 0.0), (x0 + FLOOR_SQUARE, y0 + FLOOR_SQUARE, 0.0), (x0, y0 + FLOOR_SQUARE, 0.0)]
            faces += [(k, k + 1, k + 2), (k, k + 2, k + 3)]
    return obj_text(verts, faces)


def floor_urdf() -> str:
    """The floor's visual, loaded last so that it is drawn after everything standing on it."""
    shapes = [
        Shape("mesh", (0, 0, 0), mesh=f"meshes/floor_{name}.obj", rgba=rgba, collision=False)
        for name, rgba in FLOOR_COLORS.items()
    ]
    return robot_xml("floor", Link("base_link", 0.0, shapes), [])


def ground_urdf() -> str:
    """The ground's physics: a 200 x 200 m box with its top at z = 0, friction 1. No visual: the floor
    is drawn by floor.urdf, loaded last so that it is drawn after everything standing on it."""
    link = Link("base_link", 0.0, [Shape("box", (0, 0, -0.05), (200.0, 200.0, 0.1), visual=False)], friction=1.0)
    return robot_xml("ground", link, [])


# --------------------------------------------------------------------------------------------------
# The robot: a Franka Panda with calvin_env's longer fingers (panda_longer_finger)

PANDA_MESH = "pybullet_data://franka_panda/meshes/collision/{}.obj"  # resolved at load time (robot.robot_urdf_path)
OWN_MESH = "assets://meshes/{}.obj"  # this folder's meshes, likewise
PANDA_WHITE = (1.0, 1.0, 1.0, 1.0)
# (parent joint origin xyz, rpy) for links 1..7; the standard Panda kinematics
PANDA_ARM = (
    ((0, 0, 0.333), (0, 0, 0)),
    ((0, 0, 0), (-math.pi / 2, 0, 0)),
    ((0, -0.316, 0), (math.pi / 2, 0, 0)),
    ((0.0825, 0, 0), (math.pi / 2, 0, 0)),
    ((-0.0825, 0.384, 0), (-math.pi / 2, 0, 0)),
    ((0, 0, 0), (math.pi / 2, 0, 0)),
    ((0.088, 0, 0), (math.pi / 2, 0, 0)),
)
FINGER_CONTACT = '<contact><lateral_friction value="1"/><spinning_friction value="0.1"/><rolling_friction value="0"/><stiffness value="30000"/><damping value="1000"/><restitution value="0"/></contact>'
PAD_CONTACT = '<contact><lateral_friction value="1"/><spinning_friction value="0.001"/><rolling_friction value="0"/><restitution value="0"/></contact>'
ARM_CONTACT = '<contact><lateral_friction value="0.5"/><restitution value="0"/></contact>'


def _inertial(name: str) -> str:
    """calvin_env's measured inertial of a robot link (the robot is loaded with URDF_USE_INERTIA_FROM_FILE)."""
    link = ROBOT_INERTIALS[name]
    ixx, iyy, izz = link.inertia
    return (
        f'<inertial><origin xyz="{fmt(link.com)}" rpy="0 0 0"/><mass value="{link.mass:.6g}"/>'
        f'<inertia ixx="{ixx:.6g}" ixy="0" ixz="0" iyy="{iyy:.6g}" iyz="0" izz="{izz:.6g}"/></inertial>'
    )


def _element(tag: str, shape: Shape) -> str:
    origin = f'<origin xyz="{fmt(shape.xyz)}" rpy="{fmt(shape.rpy)}"/>'
    material = f'<material name="m{color_key(shape.rgba)}"><color rgba="{fmt(shape.rgba)}"/></material>' if tag == "visual" else ""
    return f"<{tag}>{origin}<geometry>{shape.geometry_xml()}</geometry>{material}</{tag}>"


def _link(name: str, contact: str = "", visuals: Sequence[Shape] = (), collisions: Sequence[Shape] = ()) -> str:
    body = "".join(_element("visual", v) for v in visuals) + "".join(_element("collision", c) for c in collisions)
    return f'  <link name="{name}">{_inertial(name)}{contact}{body}</link>'


def _joint(name: str, kind: str, parent: str, child: str, xyz, rpy=(0, 0, 0), axis=None, limits=None) -> str:
    s = f'  <joint name="{name}" type="{kind}"><parent link="{parent}"/><child link="{child}"/><origin xyz="{fmt(xyz)}" rpy="{fmt(rpy)}"/>'
    if axis is not None:
        s += f'<axis xyz="{fmt(axis)}"/>'
    if limits is not None:
        s += f'<limit lower="{limits[0]:.6g}" upper="{limits[1]:.6g}" effort="200" velocity="2"/>'
    return s + "</joint>"


def loft_obj(sections: list[list[tuple[float, float, float]]]) -> str:
    """A closed mesh through cross-sections with the same number of points each (convex polygons,
    counter-clockwise seen from the first section toward the last), with end caps."""
    n = len(sections[0])
    verts = [pt for section in sections for pt in section]
    faces = []
    for s in range(len(sections) - 1):
        a, b = s * n, (s + 1) * n
        for i in range(n):
            j = (i + 1) % n
            faces += [(a + i, b + j, a + j), (a + i, b + i, b + j)]
    last = (len(sections) - 1) * n
    for i in range(1, n - 1):
        faces += [(0, i, i + 1), (last, last + i + 1, last + i)]
    return obj_text(verts, faces)


def finger_obj() -> str:
    """The left finger's tapered body (layout.FINGER_SECTIONS), in the finger frame."""
    return loft_obj([
        [(-hx, y_in, z), (-hx, y_out, z), (hx, y_out, z), (hx, y_in, z)] for z, hx, y_in, y_out in FINGER_SECTIONS
    ])


def gel_obj() -> str:
    """The gel pad's dome (layout.GEL_SECTIONS) in the tip frame: the apex drops 1.5 mm toward the
    pad's sides, as measured."""
    def dome(apex: float, y: float) -> float:
        return max(GEL_BASE_X + 0.001, apex - 0.0015 * (y / 0.0092) ** 2)

    sections = []
    for z, half, apex in GEL_SECTIONS:
        ys = (half, 0.5 * half, 0.0, -0.5 * half, -half)
        sections.append([(GEL_BASE_X, half, z), *((dome(apex, y), y, z) for y in ys), (GEL_BASE_X, -half, z)])
    return loft_obj(sections)


def panda_urdf() -> str:
    """The robot, link for link as calvin_env's panda_longer_finger (so link indices, inertials and
    frames agree: docs/FIDELITY.md#2-robot). Arm and hand use pybullet_data's Panda collision meshes (the
    same hulls as calvin_env's) as collisions and low-poly visuals; the fingers and gel tips are lofts of
    the measured sections."""
    mesh = lambda n: Shape("mesh", (0, 0, 0), mesh=PANDA_MESH.format(n), rgba=PANDA_WHITE)  # noqa: E731
    stand = Shape("cylinder", (-0.05, 0, -0.12), (0.13, 0.24), rgba=PANDA_WHITE)
    lines = ['<?xml version="1.0"?>', "<!-- generated by harness.sim.urdf_builder; do not edit -->", '<robot name="panda_calvin">']
    lines.append(_link("panda_link0", ARM_CONTACT, [mesh("link0"), stand], [mesh("link0")]))
    for k, (xyz, rpy) in enumerate(PANDA_ARM, start=1):
        lines.append(_link(f"panda_link{k}", ARM_CONTACT, [mesh(f"link{k}")], [mesh(f"link{k}")]))
        lines.append(_joint(f"panda_joint{k}", "revolute", f"panda_link{k - 1}", f"panda_link{k}", xyz, rpy, (0, 0, 1), ARM_JOINT_LIMITS[k - 1]))
    lines.append(_link("panda_link8"))
    lines.append(_joint("panda_joint8", "fixed", "panda_link7", "panda_link8", (0, 0, 0.107)))
    lines.append(_link("panda_hand", ARM_CONTACT, [mesh("hand")], [mesh("hand")]))
    lines.append(_joint("panda_hand_joint", "fixed", "panda_link8", "panda_hand", (0, 0, 0), (0, 0, -math.pi / 4)))
    tip_xyz, tip_yaw = GEL_TIP_ORIGIN
    for side, sign in (("left", 1.0), ("right", -1.0)):
        yaw = 0.0 if sign > 0 else math.pi  # the right finger is the left one turned about z
        finger = Shape("mesh", (0, 0, 0), rpy=(0, 0, yaw), mesh=OWN_MESH.format("panda_finger"), rgba=PANDA_WHITE)
        lines.append(_link(f"panda_{side}finger", FINGER_CONTACT, [finger], [finger]))
        lines.append(_joint(f"panda_finger_joint_{side}", "prismatic", "panda_hand", f"panda_{side}finger", (0, 0, FINGER_JOINT_Z), axis=(0, sign, 0), limits=(0.0, 0.04)))
        gel = Shape("mesh", (0, 0, 0), mesh=OWN_MESH.format("panda_gel"), rgba=PANDA_WHITE)
        lines.append(_link(f"finger_{side}_tip", PAD_CONTACT, [gel], [gel]))
        xyz = (sign * tip_xyz[0], sign * tip_xyz[1], tip_xyz[2])
        lines.append(_joint(f"joint_finger_tip_{side}", "fixed", f"panda_{side}finger", f"finger_{side}_tip", xyz, (0, 0, sign * tip_yaw)))
    lines.append(_link("panda_grasptarget"))
    lines.append(_joint("panda_grasptarget_hand", "fixed", "panda_hand", "panda_grasptarget", (0, 0, GRASP_TARGET_Z)))
    cam_xyz, cam_rpy = GRIPPER_CAM_ORIGIN
    lines.append(_link("gripper_cam", visuals=[Shape("box", (0, 0, 0), GRIPPER_CAM_BOX, rgba=PANDA_WHITE)]))
    lines.append(_joint("camera_joint", "fixed", "panda_hand", "gripper_cam", cam_xyz, cam_rpy))
    lines.append(_link("tcp"))
    lines.append(_joint("tcp_joint", "fixed", "panda_hand", "tcp", (0, 0, 0.14)))
    lines.append("</robot>")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------


def generate_assets() -> dict[str, bytes]:
    """Every generated asset file, {path relative to assets/: content}."""
    files: dict[str, bytes] = {}
    for lay in SCENES.values():
        urdf, shell, meshes = table_urdf(lay)
        files[f"table_{lay.name}.urdf"] = urdf.encode()
        files[f"table_{lay.name}_shell.urdf"] = shell.encode()
        files.update({k: v.encode() for k, v in meshes.items()})
    for color in BLOCK_COLORS:
        for size in BLOCK_EXTENTS:
            files[f"block_{color}_{size}.urdf"] = block_urdf(color, size).encode()
    files["panda_calvin.urdf"] = panda_urdf().encode()
    files["meshes/panda_finger.obj"] = finger_obj().encode()
    files["meshes/panda_gel.obj"] = gel_obj().encode()
    files["meshes/bulb_cap.obj"] = hemisphere_obj(0.028).encode()
    files["ground.urdf"] = ground_urdf().encode()
    files["floor.urdf"] = floor_urdf().encode()
    for parity, name in enumerate(FLOOR_COLORS):
        files[f"meshes/floor_{name}.obj"] = floor_obj(parity).encode()
    return files


def write_assets(root: Path = ASSETS_DIR) -> list[Path]:
    written = []
    for rel, content in generate_assets().items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_bytes() != content:
            path.write_bytes(content)
            written.append(path)
    return written


if __name__ == "__main__":
    changed = write_assets()
    print(f"wrote {len(changed)} changed file(s) under {ASSETS_DIR}")
