"""The failure analysis (harness/eval/failures.py): real evaluations on the built-in scene, their traces on
disk, and traces written with known states."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harness.eval import AgentConfig, evaluate_single_tasks
from harness.eval.failures import FailuresError, failures_markdown, read_failures
from harness.eval.rollout import SubtaskTrace
from harness.eval.video import TraceStore
from harness.sim.layout import NEUTRAL_TCP_POS, get_layout
from tests.eval_agents import HoldStill, Misbehaving

ROOT = Path(__file__).resolve().parents[1]
TASKS = ["lift_red_block_table", "push_blue_block_left", "open_drawer"]


def failures_of(agent, out: Path, ep_len: int, tasks: list[str] = TASKS) -> dict[str, object]:
    evaluate_single_tasks(agent, output_dir=out, tasks=tasks, episodes_per_task=1, ep_len=ep_len, video_failures=10,
                          videos=0, video_stride=100)
    found, failed = read_failures(out)
    assert failed == len(found) == len(tasks)
    return {f.task: f for f in found}


def test_a_policy_that_holds_still_reaches_nothing_and_moves_nothing(tmp_path):
    found = failures_of(Misbehaving("none", bad_seed=-1), tmp_path, ep_len=15)  # relative no-ops
    for task in ("lift_red_block_table", "push_blue_block_left"):
        f = found[task]
        assert f.stage == "not reached" and not f.closed_near
        assert f.closest_cm == pytest.approx(f.start_cm, abs=0.3) and f.start_cm > 10
        assert f.moved_cm < 0.1 and f.other_moved_cm < 0.1 and f.closed_share == 0  # its gripper action: open
    assert found["open_drawer"].stage == "not moved" and found["open_drawer"].progress < 0.01


def test_the_expert_cut_short_is_caught_where_it_was(tmp_path):
    """The scripted expert stopped after 30 steps of a lift: at the red block with the gripper closed; after 42
    steps of a push and of opening the drawer: the blue block pushed, the drawer pulled, part of the way."""
    lift = failures_of(AgentConfig("scripted"), tmp_path / "lift", 30, TASKS[:1])["lift_red_block_table"]
    found = failures_of(AgentConfig("scripted"), tmp_path / "push", 42, TASKS[1:])
    push, drawer = found["push_blue_block_left"], found["open_drawer"]
    assert lift.target == "red" and lift.closest_cm < 2 and lift.closed_near and 0 < lift.closed_share < 0.5
    assert push.target == "blue" and push.stage == "moved, not done" and 1 < push.moved_cm < 10
    assert push.other_moved_cm < 0.5
    assert drawer.stage == "moved, short" and 0.05 < drawer.progress < 1


def test_the_command_writes_its_tables_and_names_a_folder_without_traces(tmp_path):
    evaluate_single_tasks(Misbehaving("none", bad_seed=-1), output_dir=tmp_path / "traced", tasks=TASKS,
                          episodes_per_task=1, ep_len=5, video_failures=10, videos=0, video_stride=100)
    cmd = [sys.executable, "-m", "harness.eval.failures", str(tmp_path / "traced")]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| lift | 1 | " in proc.stdout and "| open_drawer | 1 | 1 (100 %) |" in proc.stdout
    assert json.loads((tmp_path / "traced" / "failures.json").read_text())[0]["reason"] == "timeout"
    assert (tmp_path / "traced" / "failures.md").read_text() == proc.stdout

    evaluate_single_tasks(Misbehaving("none", bad_seed=-1), output_dir=tmp_path / "untraced", tasks=TASKS,
                          episodes_per_task=1, ep_len=5)
    subcommand = [sys.executable, "-m", "harness.eval", "failures", str(tmp_path / "untraced")]
    proc = subprocess.run(subcommand, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "untraced: no traces/*.npz" in proc.stderr and "video_failures=N" in proc.stderr
    with pytest.raises(FailuresError, match="no run.json"):
        read_failures(tmp_path)


def frames(n: int, scene: str = "D", **columns: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """n frames at the neutral pose, the blocks red, blue, pink at x = 0, 0.1, 0.2 on the table, with the named
    columns set per frame: scene_K / robot_K are scene_obs / robot_obs entries, red_z etc. a block's coordinate
    (in the scene's block order)."""
    robot, scene_obs = np.zeros((n, 15)), np.zeros((n, 24))
    robot[:, :3], robot[:, 14] = NEUTRAL_TCP_POS, 1.0
    layout = get_layout(scene)
    for k, color in enumerate(("red", "blue", "pink")):
        scene_obs[:, layout.block_obs_slice(color)][:, :3] = (0.1 * k, 0.0, 0.46)
    for name, values in columns.items():
        which, index = name.split("_")
        if which in ("red", "blue", "pink"):
            scene_obs[:, layout.block_obs_slice(which).start + "xyz".index(index)] = values
        else:
            (robot if which == "robot" else scene_obs)[:, int(index)] = values
    return list(robot), list(scene_obs)


def write_chain(folder: Path, scene: str, traces: list[SubtaskTrace], outcomes: list[dict]) -> None:
    """A whole-chain trace as an evaluation with videos=1 keeps it, with its run.json."""
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({"env": {"scene": scene}, "mode": "chains"}))
    record = {"key": "chain/0", "index": 0, "seed": 0, "tasks": [t.task for t in traces],
              "completed": sum(o["success"] for o in outcomes), "subtasks": outcomes}
    (folder / "results.jsonl").write_text(json.dumps(record) + "\n")
    TraceStore(folder / "traces", video_chains=1, video_failures=0).add(record, traces)


@pytest.mark.parametrize("scene", ["D", "A"])  # D lists the blocks red, blue, pink in scene_obs; A pink, blue, red
def test_measures_from_known_states(tmp_path, scene):
    """A chain's subtask 1 (a success) is skipped; subtask 2, unstack_block, targets the highest block (pink,
    raised), which the TCP reaches (3 cm) without moving it while the red block is knocked 2 cm. In another
    chain the switch of turn_on_lightbulb went half the way to its on threshold and back, and the button of
    turn_on_led, pressed at the start already, went a quarter of the way from there."""
    robot, scene_obs = frames(3, scene, red_x=np.array([0.0, 0.0, 0.02]), pink_z=np.full(3, 0.6))
    for r, height in zip(robot, (0.2, 0.03, 0.1)):
        r[:3] = (0.2, 0.0, 0.6 + height)
    unstack = SubtaskTrace("unstack_block", "x", robot, scene_obs)
    outcomes = [{"task": "open_drawer", "success": True, "reason": "success", "steps": 3},
                {"task": "unstack_block", "success": False, "reason": "timeout", "steps": 2}]
    write_chain(tmp_path / "run", scene, [SubtaskTrace("open_drawer", "x", *frames(4, scene)), unstack], outcomes)
    (f,), failed = read_failures(tmp_path / "run")
    assert failed == 1 and f.position == 2 and f.target == "pink" and f.stage == "reached, not moved"
    assert (f.start_cm, f.closest_cm, f.other_moved_cm) == pytest.approx((20.0, 3.0, 2.0))
    assert not f.closed_near and f.closed_share == 0  # the gripper stayed open
    assert f.tcp_end == pytest.approx([0.2, 0.0, 0.7])  # the last frame's TCP

    lights = [SubtaskTrace("turn_on_lightbulb", "x", *frames(4, scene, scene_3=np.array([0.0, 0.011, 0.022, 0.01]))),
              SubtaskTrace("turn_on_led", "x", *frames(2, scene, scene_2=np.array([0.006, 0.007])))]
    for k, trace in enumerate(lights):
        write_chain(tmp_path / f"lights{k}", scene, [trace],
                    [{"task": trace.task, "success": False, "reason": "timeout", "steps": 3}])
        (f,), failed = read_failures(tmp_path / f"lights{k}")
        assert failed == 1 and f.stage == "moved, short" and f.progress == pytest.approx((0.5, 0.25)[k])


@pytest.mark.parametrize("scene", ["D", "A"])
def test_placing_is_measured_by_where_the_block_went(tmp_path, scene):
    """place and stack start with the block in the hand: what counts is whether the policy let go and where the
    block ended. Kept in the closed hand; released onto the slider (x in the bay, behind the cabinet front, above
    the table top); released 4 cm over the blue block."""
    layout = get_layout(scene)
    held = frames(3, scene, robot_14=np.full(3, -1.0), red_x=np.full(3, 0.05), red_z=np.full(3, 0.6))
    for r in held[0]:
        r[:3] = (0.05, 0.0, 0.61)
    slider_x = layout.bay[0] + 0.05
    placed = frames(3, scene, robot_14=np.array([-1.0, 1.0, 1.0]), red_x=np.full(3, slider_x),
                    red_y=np.array([0.0, 0.05, 0.1]), red_z=np.array([0.6, 0.6, 0.52]))
    for r in placed[0]:
        r[:3] = (slider_x, 0.0, 0.7)
    stacked = frames(3, scene, robot_14=np.array([-1.0, -1.0, 1.0]), red_x=np.array([0.0, 0.1, 0.1]),
                     red_z=np.array([0.6, 0.55, 0.50]))
    for name, task, (robot, scene_obs) in (("held", "place_in_drawer", held), ("placed", "place_in_slider", placed),
                                           ("stacked", "stack_block", stacked)):
        write_chain(tmp_path / name, scene, [SubtaskTrace(task, "x", robot, scene_obs)],
                    [{"task": task, "success": False, "reason": "timeout", "steps": 3}])
    (held,), _ = read_failures(tmp_path / "held")
    (placed,), _ = read_failures(tmp_path / "placed")
    (stacked,), _ = read_failures(tmp_path / "stacked")
    assert held.target == "red" and not held.released and held.end_place == "in the hand"
    assert placed.released and placed.end_place == ("slider_left" if slider_x < layout.bay_center_x else "slider_right")
    assert stacked.released and stacked.end_place == "on a block"
    assert "## Placing" in failures_markdown(tmp_path, [held, placed, stacked], 3)


def test_where_a_placed_block_ended_is_the_oracles_reading_of_the_last_frame(tmp_path):
    """place_in_slider starts with the block in the hand (the expert's setup): held in the closed gripper it
    ends in the hand, as the oracle's contacts say; with the gripper opened it falls and is not."""
    held = failures_of(HoldStill(-1.0), tmp_path / "held", 10, ["place_in_slider"])["place_in_slider"]
    dropped = failures_of(HoldStill(1.0), tmp_path / "dropped", 30, ["place_in_slider"])["place_in_slider"]
    assert not held.released and held.end_place == "in the hand"
    assert dropped.released and dropped.end_place in ("table", "slider_left", "slider_right")
    (trace,) = (tmp_path / "held" / "traces").glob("*.npz")
    meta = json.loads(str(np.load(trace)["meta"]))
    assert meta["subtasks"][-1]["end_state"]["grasped"] == 1


def test_the_traces_end_state_decides_over_distances(tmp_path):
    """A trace that has the oracle's state at its last frame is read by it: the gripper closed beside the block
    (distances would say "in the hand") while the oracle saw it on the table, not touching the fingers."""
    robot, scene_obs = frames(3, "D", robot_14=np.full(3, -1.0), red_x=np.full(3, 0.05), red_z=np.full(3, 0.6))
    for r in robot:
        r[:3] = (0.05, 0.0, 0.61)
    state = {"led": 0, "lightbulb": 0, "slider": "right", "drawer": "closed", "red_block": "table",
             "blue_block": "table", "pink_block": "table", "grasped": 0}
    for name, end_state, place in (("legacy", None, "in the hand"), ("read", state, "table"),
                                   ("grasped", {**state, "red_block": "grasped", "grasped": 1}, "in the hand")):
        write_chain(tmp_path / name, "D", [SubtaskTrace("place_in_drawer", "x", robot, scene_obs, end_state=end_state)],
                    [{"task": "place_in_drawer", "success": False, "reason": "timeout", "steps": 3}])
        (f,), _ = read_failures(tmp_path / name)
        assert f.end_place == place, name
