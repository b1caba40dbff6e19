"""What a policy did in the subtasks it failed: how near it came to the object, and what it moved.

    python -m harness.eval.failures EVAL_DIR        # prints the tables, writes failures.md and failures.json
    python -m harness.eval failures EVAL_DIR        # the same

An evaluation keeps the state of every frame of the failed subtasks of its first `video_failures` failing
chains or episodes (`traces/*.npz`: robot_obs and scene_obs, docs/EVALUATION.md, Videos). Run the evaluation
with `video_failures=N` as large as the failures to be analysed. From those states, which the policy never
saw, this measures per failed subtask:

  block tasks     the target block: the one the task names (rotate, push, lift), else the block nearest the
                  TCP at the subtask's start (place, stack: the block the previous subtask left in the gripper),
                  the highest block (unstack_block) or the one on the table (push_into_drawer: the others are in
                  the slider).
                  start_cm, closest_cm  the TCP's distance to the target's centre at the start, and at its nearest
                  closed_near           the gripper was commanded closed while the TCP was within REACH_M of it
                  moved_cm              how far the target got from where it started (at its farthest)
                  other_moved_cm        the same for the other blocks (the farthest of them)
                  stage                 "moved, not done" (the target moved by MOVED_M or more), else
                                        "reached, not moved" (the TCP came within REACH_M), else "not reached"
  placing         place_in_slider, place_in_drawer, stack_block start with the block in the hand, so instead of
                  reaching it, in their own table:
                  released              the gripper was commanded open at some frame
                  end_place             where the block ended, as the oracle's symbolic state reads it at
                                        the last frame (harness.tasks.symbolic, from contacts): "in the hand"
                                        (grasped), "on a block" (stacked on one), table, slider_left /
                                        slider_right, drawer. Traces written before they kept that state:
                                        "in the hand" when the gripper was closed with the TCP within REACH_M,
                                        "on a block" STACK_DZ or more above another block within ON_BLOCK_M of
                                        it in x and y, else its place by position
  articulated     progress: the largest change of the task's joint in the task's direction over the change
                  the oracle asks for (docs/CALVIN.md, Task thresholds); the lights: over the change from the
                  start value to the switch's on threshold, or to the button's pressed depth.
                  stage: "not moved" (progress < 5 %), "moved, short", "crossed" (the change was made but
                  undone before the subtask's end: the LED pressed twice, the switch pushed back)
  every task      tcp_end (where the TCP was at the end, in failures.json) and the share of the frames with
                  the gripper commanded closed (in the tables: "gripper closed")

The tables group the failures by task family and by task. Thresholds are the same for every run, so two runs'
tables compare (e.g. two checkpoints of one training run on the same chains).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from harness.eval.rollout import SubtaskTrace
from harness.eval.store import RUN_FILE, read_results
from harness.eval.video import load_trace
from harness.sim.layout import (BUTTON_PRESSED_THRESHOLD, SWITCH_ON_THRESHOLD, SceneLayout, get_layout)
from harness.tasks.catalog import COLORS, TASK_NAMES
from harness.tasks.oracle import DRAWER_DQ, SLIDER_DQ
from harness.tasks.symbolic import STACK_DZ, place_by_position

REACH_M = 0.05  # the TCP within this of a block's centre: at the block (a grasp holds it at ~1-2 cm)
MOVED_M = 0.01  # a block displaced by more than this was moved (resting blocks stay within ~1 mm)
STILL = 0.05  # articulated progress under this: the joint was not moved
ON_BLOCK_M = 0.04  # a block over another within this (x and y) rests on it (the blocks are 4 cm wide)
PLACING = ("place_in_slider", "place_in_drawer", "stack_block")  # tasks that start with the block in the hand
END_PLACES = ("in the hand", "table", "slider_left", "slider_right", "drawer", "on a block")
GRIPPER_ACTION = 14  # robot_obs: the last gripper action, -1 close
JOINTS = {"slider": 0, "drawer": 1, "button": 2, "switch": 3}  # scene_obs indices
# the bulb is on while the switch is past its threshold; a press of the button past its own toggles the LED
LIGHT_THRESHOLDS = {"switch": SWITCH_ON_THRESHOLD, "button": BUTTON_PRESSED_THRESHOLD}

# task -> (joint, signed change the oracle asks for); the lights are handled by their thresholds
ARTICULATED = {
    "move_slider_left": ("slider", SLIDER_DQ), "move_slider_right": ("slider", -SLIDER_DQ),
    "open_drawer": ("drawer", DRAWER_DQ), "close_drawer": ("drawer", -DRAWER_DQ),
    "turn_on_lightbulb": ("switch", None), "turn_off_lightbulb": ("switch", None),
    "turn_on_led": ("button", None), "turn_off_led": ("button", None),
}
FAMILIES = (  # (family, task-name test), first match; the families of CALVIN's task list
    ("rotate", lambda t: t.startswith("rotate_")), ("push (table)", lambda t: t.startswith("push_") and "block" in t),
    ("lift", lambda t: t.startswith("lift_")), ("place", lambda t: t.startswith("place_")),
    ("stack / unstack", lambda t: t in ("stack_block", "unstack_block")),
    ("push_into_drawer", lambda t: t == "push_into_drawer"),
    ("slider", lambda t: "slider" in t), ("drawer", lambda t: t.endswith("_drawer")),
    ("lights", lambda t: t.endswith(("_led", "_lightbulb"))),
)


class FailuresError(ValueError):
    """An evaluation folder this cannot analyse (no traces, no run.json, an unknown scene)."""


@dataclass
class Failure:
    """One failed subtask, measured from its trace."""

    key: str  # the chain or episode ("chain/17")
    position: int  # the subtask's position in the chain, from 1
    task: str
    family: str
    reason: str  # the outcome's reason (timeout, invalid_action, ...)
    steps: int
    stage: str
    target: str | None = None  # block tasks: the target block's colour
    start_cm: float | None = None
    closest_cm: float | None = None
    closed_near: bool | None = None
    moved_cm: float | None = None
    other_moved_cm: float | None = None
    progress: float | None = None  # articulated tasks
    released: bool | None = None  # placing tasks
    end_place: str | None = None
    tcp_end: list[float] | None = None  # where the TCP was at the end (m)
    closed_share: float | None = None  # share of the frames with the gripper commanded closed


def family_of(task: str) -> str:
    return next(name for name, matches in FAMILIES if matches(task))


def _block_xyz(scene_obs: np.ndarray, layout: SceneLayout, color: str) -> np.ndarray:
    """(T, 3) positions of a block over the frames."""
    return scene_obs[:, layout.block_obs_slice(color)][:, :3]


def _target_block(task: str, robot_obs: np.ndarray, scene_obs: np.ndarray, layout: SceneLayout) -> str:
    named = [c for c in COLORS if f"_{c}_" in task]
    if named:
        return named[0]
    start = {c: _block_xyz(scene_obs[:1], layout, c)[0] for c in COLORS}
    if task == "unstack_block":
        return max(COLORS, key=lambda c: start[c][2])
    if task == "push_into_drawer":  # the one block on the table, which lies in front of (below the y of) the slider
        return min(COLORS, key=lambda c: start[c][1])
    return min(COLORS, key=lambda c: float(np.linalg.norm(start[c] - robot_obs[0, :3])))


def measure_block(task: str, robot_obs: np.ndarray, scene_obs: np.ndarray, layout: SceneLayout) -> dict[str, Any]:
    target = _target_block(task, robot_obs, scene_obs, layout)
    xyz = _block_xyz(scene_obs, layout, target)
    distance = np.linalg.norm(robot_obs[:, :3] - xyz, axis=1)
    near = distance <= REACH_M
    moved = float(np.linalg.norm(xyz - xyz[0], axis=1).max())
    others = [_block_xyz(scene_obs, layout, c) for c in COLORS if c != target]
    other_moved = max(float(np.linalg.norm(o - o[0], axis=1).max()) for o in others)
    if moved >= MOVED_M:
        stage = "moved, not done"
    elif near.any():
        stage = "reached, not moved"
    else:
        stage = "not reached"
    return {"stage": stage, "target": target, "start_cm": 100 * float(distance[0]),
            "closest_cm": 100 * float(distance.min()),
            "closed_near": bool((near & (robot_obs[:, GRIPPER_ACTION] < 0)).any()),
            "moved_cm": 100 * moved, "other_moved_cm": 100 * other_moved}


def end_place(robot_obs: np.ndarray, scene_obs: np.ndarray, layout: SceneLayout, target: str,
              end_state: dict[str, Any] | None = None) -> str:
    """Where the target block is at the subtask's last frame (the module's docstring, `end_place`): read off the
    oracle's symbolic state there (its contacts) where the trace has it; in traces from before, by distances."""
    xyz = _block_xyz(scene_obs[-1:], layout, target)[0]
    if end_state is not None:
        place = end_state[f"{target}_block"]
        if place == "stacked_bottom":  # under another block: where it stands
            return place_by_position(tuple(xyz), layout)
        return {"grasped": "in the hand", "stacked_top": "on a block"}.get(place, place)
    if robot_obs[-1, GRIPPER_ACTION] < 0 and np.linalg.norm(robot_obs[-1, :3] - xyz) <= REACH_M:
        return "in the hand"
    for other in (c for c in COLORS if c != target):
        below = _block_xyz(scene_obs[-1:], layout, other)[0]
        if xyz[2] - below[2] >= STACK_DZ and np.linalg.norm(xyz[:2] - below[:2]) <= ON_BLOCK_M:
            return "on a block"
    return place_by_position(tuple(xyz), layout)


def measure_placing(robot_obs: np.ndarray, scene_obs: np.ndarray, layout: SceneLayout, target: str,
                    end_state: dict[str, Any] | None = None) -> dict[str, Any]:
    released = bool((robot_obs[:, GRIPPER_ACTION] > 0).any())
    return {"released": released, "end_place": end_place(robot_obs, scene_obs, layout, target, end_state),
            "stage": "released" if released else "not released"}


def articulated_progress(task: str, scene_obs: np.ndarray) -> float:
    """The largest change of the task's joint in its direction, as a fraction of what the oracle asks for."""
    joint, needed = ARTICULATED[task]
    q = scene_obs[:, JOINTS[joint]]
    if joint in LIGHT_THRESHOLDS:  # the light follows its joint across a threshold
        needed = LIGHT_THRESHOLDS[joint] - q[0]
    if abs(needed) < 1e-9:
        return 1.0
    return float(max(0.0, ((q - q[0]) / needed).max()))


def measure_articulated(task: str, scene_obs: np.ndarray) -> dict[str, Any]:
    progress = articulated_progress(task, scene_obs)
    stage = "not moved" if progress < STILL else "moved, short" if progress < 1 else "crossed"
    return {"stage": stage, "progress": progress}


def measure(trace: SubtaskTrace, layout: SceneLayout) -> dict[str, Any]:
    robot_obs, scene_obs = np.stack(trace.robot_obs), np.stack(trace.scene_obs)
    arm = {"tcp_end": [round(float(v), 4) for v in robot_obs[-1, :3]],
           "closed_share": float((robot_obs[:, GRIPPER_ACTION] < 0).mean())}
    if trace.task in ARTICULATED:
        return {**measure_articulated(trace.task, scene_obs), **arm}
    block = measure_block(trace.task, robot_obs, scene_obs, layout)
    if trace.task in PLACING:
        block.update(measure_placing(robot_obs, scene_obs, layout, block["target"], trace.end_state))
    return {**block, **arm}


def read_failures(folder: Path) -> tuple[list[Failure], int]:
    """The traced failed subtasks of an evaluation folder, measured; and how many failed in all."""
    folder = Path(folder)
    layout = get_layout(_scene(folder))
    traces = sorted((folder / "traces").glob("*.npz"))
    failed_in_all = sum(1 for r in read_results(folder).values() if r["completed"] < len(r["tasks"]))
    if failed_in_all and not traces:
        raise FailuresError(f"{folder}: no traces/*.npz. Evaluate with video_failures=N (N failing chains or "
                            f"episodes keep their failed subtask's trace) and run this again")
    found = []
    for path in traces:
        meta, subtasks = load_trace(path)
        outcomes = meta["outcomes"]
        first = len(outcomes) - len(subtasks)  # a failure file holds the last subtask only
        for k, trace in enumerate(subtasks):
            outcome = outcomes[first + k]
            if outcome["success"]:
                continue
            found.append(Failure(key=meta["key"], position=first + k + 1, task=trace.task,
                                 family=family_of(trace.task), reason=outcome["reason"], steps=outcome["steps"],
                                 **measure(trace, layout)))
    return found, failed_in_all


def _scene(folder: Path) -> str:
    run = folder / RUN_FILE
    if not run.is_file():
        raise FailuresError(f"{folder}: no {RUN_FILE}; expected an evaluation's output folder")
    scene = json.loads(run.read_text()).get("env", {}).get("scene")
    if scene is None:
        raise FailuresError(f"{run}: env.scene is not set; the block order of scene_obs depends on it")
    return str(scene)


# --- tables ----------------------------------------------------------------------------------------


def _median(values: Sequence[float | None]) -> str:
    kept = [v for v in values if v is not None]
    return f"{np.median(kept):.1f}" if kept else "-"


def _share(flags: Sequence[bool]) -> str:
    return f"{sum(flags)} ({100 * sum(flags) / len(flags):.0f} %)" if flags else "-"


def block_rows(label: str, groups: dict[str, list[Failure]]) -> list[str]:
    rows = [f"| {label} | failed | start -> closest (cm, median) | reached (<= {100 * REACH_M:.0f} cm) "
            f"| closed the gripper there | moved the target (>= {100 * MOVED_M:.0f} cm) | moved another block "
            f"| target moved (cm, median) | gripper closed (median share of frames) |",
            "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for name, fs in groups.items():
        reached = [f.closest_cm is not None and f.closest_cm <= 100 * REACH_M for f in fs]
        moved = [f.moved_cm is not None and f.moved_cm >= 100 * MOVED_M for f in fs]
        other = [f.other_moved_cm is not None and f.other_moved_cm >= 100 * MOVED_M for f in fs]
        approach = f"{_median([f.start_cm for f in fs])} -> {_median([f.closest_cm for f in fs])}"
        rows.append(f"| {name} | {len(fs)} | {approach} | {_share(reached)} | {_share([bool(f.closed_near) for f in fs])} "
                    f"| {_share(moved)} | {_share(other)} | {_median([f.moved_cm for f in fs])} "
                    f"| {_median([100 * f.closed_share for f in fs])} % |")
    return rows


def placing_rows(label: str, groups: dict[str, list[Failure]]) -> list[str]:
    rows = [f"| {label} | failed | released the block | ended: " + " | ".join(END_PLACES) + " | target moved (cm, median) |",
            "|---|---:|---:|" + "---:|" * (len(END_PLACES) + 1)]
    for name, fs in groups.items():
        ends = " | ".join(_share([f.end_place == p for f in fs]) for p in END_PLACES)
        rows.append(f"| {name} | {len(fs)} | {_share([bool(f.released) for f in fs])} | {ends} "
                    f"| {_median([f.moved_cm for f in fs])} |")
    return rows


def articulated_rows(label: str, groups: dict[str, list[Failure]]) -> list[str]:
    rows = [f"| {label} | failed | not moved (< 5 %) | moved, short | crossed the threshold | progress (median) "
            f"| gripper closed (median share of frames) |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, fs in groups.items():
        rows.append(f"| {name} | {len(fs)} | {_share([f.stage == 'not moved' for f in fs])} "
                    f"| {_share([f.stage == 'moved, short' for f in fs])} | {_share([f.stage == 'crossed' for f in fs])} "
                    f"| {_median([100 * f.progress for f in fs if f.progress is not None])} % "
                    f"| {_median([100 * f.closed_share for f in fs])} % |")
    return rows


def _grouped(failures: list[Failure], by: str, order: Sequence[str]) -> dict[str, list[Failure]]:
    groups: dict[str, list[Failure]] = defaultdict(list)
    for f in failures:
        groups[getattr(f, by)].append(f)
    return {name: groups[name] for name in order if name in groups}


def failures_markdown(folder: Path, failures: list[Failure], failed_in_all: int) -> str:
    blocks = [f for f in failures if f.task not in ARTICULATED and f.task not in PLACING]
    placing = [f for f in failures if f.task in PLACING]
    joints = [f for f in failures if f.task in ARTICULATED]
    families = [name for name, _ in FAMILIES]
    lines = [f"# Failed subtasks: {folder}", "",
             f"{len(failures)} failed subtasks traced of {failed_in_all} (the evaluation's `video_failures`); "
             f"measured from robot_obs and scene_obs (docs/EVALUATION.md, Failure analysis).", ""]
    if blocks:
        lines += ["## Block tasks", "", *block_rows("family", _grouped(blocks, "family", families)), "",
                  *block_rows("task", _grouped(blocks, "task", TASK_NAMES)), ""]
    if placing:
        lines += ["## Placing (the block starts in the hand)", "",
                  *placing_rows("task", _grouped(placing, "task", TASK_NAMES)), ""]
    if joints:
        lines += ["## Articulated tasks", "", *articulated_rows("family", _grouped(joints, "family", families)), "",
                  *articulated_rows("task", _grouped(joints, "task", TASK_NAMES)), ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.eval.failures", description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", type=Path, help="an evaluation's output folder (run with video_failures=N)")
    args = ap.parse_args(argv)
    try:
        failures, failed_in_all = read_failures(args.folder)
    except (FailuresError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    text = failures_markdown(args.folder, failures, failed_in_all)
    if len(failures) < failed_in_all:
        print(f"warning: {failed_in_all - len(failures)} of the {failed_in_all} failed subtasks have no trace (the "
              f"evaluation's video_failures keeps the lowest-index ones, which in single-task mode are the first "
              f"tasks'): evaluate again with video_failures={failed_in_all} (overwrite=true, or another output_dir) "
              f"for all", file=sys.stderr)
    (args.folder / "failures.md").write_text(text)
    (args.folder / "failures.json").write_text(json.dumps([asdict(f) for f in failures], indent=1) + "\n")
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
