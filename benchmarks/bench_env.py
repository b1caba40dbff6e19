"""Environment speed of the built-in scene, measured the way docs/CALVIN.md#reference-speed measured calvin_env.

    python benchmarks/bench_env.py [--scene D] [--steps 300] [--repeats 5] [--json PATH]

Random relative actions with the gripper toggling, from a random reset. Reports the median over
repeats of: env steps/s with both cameras at CALVIN's resolutions, steps/s with cameras off, the
per-camera render time, and reset time with a given state and random; and the single-task setups (the
scripted expert's steps before the agent's, harness/eval/rollout.py) as they run, without rendering, side by
side with the same setups rendered at every step (as before they stopped rendering). calvin_env itself cannot be
installed here, so its figures (measured on a 2-core machine like this one) are printed beside ours as
the reference to beat.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from contextlib import nullcontext
from unittest import mock

import numpy as np

from agents import make_agent
from harness.envs import make_env
from harness.envs.builtin import BuiltinEnv
from harness.eval.jobs import single_task_jobs
from harness.eval.rollout import run_chain
from harness.tasks import TaskOracle

CALVIN_REFERENCE = {"steps_per_s_both_cameras": 15.6, "steps_per_s_no_cameras": 560.0, "reset_ms_with_state": 60.0}


def random_actions(n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    actions = []
    for i in range(n):
        gripper = 1.0 if (i // 20) % 2 == 0 else -1.0  # toggle every 20 steps
        actions.append(np.r_[rng.uniform(-1, 1, 6), gripper])
    return actions


def steps_per_second(env, actions: list[np.ndarray]) -> float:
    env.reset()
    start = time.perf_counter()
    for a in actions:
        env.step(a)
    return len(actions) / (time.perf_counter() - start)


def render_ms(env, camera: str, n: int = 30) -> float:
    pose = env.robot.tcp_pose()
    start = time.perf_counter()
    for _ in range(n):
        env.cameras.render(*pose, names=(camera,))
    return (time.perf_counter() - start) / n * 1000


def reset_ms(env, with_state: bool, n: int = 50) -> float:
    obs = env.reset()
    start = time.perf_counter()
    for _ in range(n):
        if with_state:
            env.reset(robot_obs=obs["robot_obs"], scene_obs=obs["scene_obs"])
        else:
            env.reset()
    return (time.perf_counter() - start) / n * 1000


def setup_s(env, rendered: bool) -> float:
    """Seconds per single-task setup: one episode of each task that has one, the agent (any: it steps once)
    stepping once."""
    jobs = [job for job in single_task_jobs(None, 1) if job.setup]
    patch = mock.patch.object(BuiltinEnv, "without_cameras", lambda self: nullcontext()) if rendered else nullcontext()
    with patch:
        start = time.perf_counter()
        for job in jobs:
            run_chain(env, make_agent("random", seed=0), job, 1, TaskOracle())
    return (time.perf_counter() - start) / len(jobs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scene", default="D")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--renderer", default="tiny", choices=("tiny", "egl"))
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()

    actions = random_actions(args.steps, seed=0)
    with_cams = make_env("builtin", scene=args.scene, renderer=args.renderer)
    blind = make_env("builtin", scene=args.scene, cameras=())
    runs: dict[str, list[float]] = {k: [] for k in ("both", "none", "static_ms", "gripper_ms", "reset_state_ms", "reset_random_ms", "setup_s", "setup_rendered_s")}
    for _ in range(args.repeats):  # interleaved, so that a busy moment hits every figure alike
        runs["both"].append(steps_per_second(with_cams, actions))
        runs["none"].append(steps_per_second(blind, actions * 5))
        runs["static_ms"].append(render_ms(with_cams, "static"))
        runs["gripper_ms"].append(render_ms(with_cams, "gripper"))
        runs["reset_state_ms"].append(reset_ms(blind, with_state=True))
        runs["reset_random_ms"].append(reset_ms(blind, with_state=False))
        runs["setup_s"].append(setup_s(with_cams, rendered=False))
        runs["setup_rendered_s"].append(setup_s(with_cams, rendered=True))
    med = {k: statistics.median(v) for k, v in runs.items()}
    figures = {
        "scene": args.scene,
        "renderer": with_cams.description.renderer,
        "steps_per_s_both_cameras": med["both"],
        "steps_per_s_no_cameras": med["none"],
        "render_ms_static_200": med["static_ms"],
        "render_ms_gripper_84": med["gripper_ms"],
        "reset_ms_with_state": med["reset_state_ms"],
        "reset_ms_random": med["reset_random_ms"],
        "single_task_setup_s": med["setup_s"],
        "single_task_setup_rendered_s": med["setup_rendered_s"],
        "repeats": args.repeats,
        "steps_per_repeat": args.steps,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus, load {os.getloadavg()[0]:.2f}",
    }
    print(f"built-in scene {args.scene}, renderer {figures['renderer']}, median of {args.repeats} runs ({figures['machine']})")
    print(f"{'':32s} {'vla-harness':>12s} {'calvin_env':>12s} {'ratio':>8s}")
    for key, label in (("steps_per_s_both_cameras", "steps/s, both cameras"), ("steps_per_s_no_cameras", "steps/s, cameras off")):
        print(f"{label:32s} {figures[key]:12.1f} {CALVIN_REFERENCE[key]:12.1f} {figures[key] / CALVIN_REFERENCE[key]:7.2f}x")
    print(f"{'reset with state (ms)':32s} {figures['reset_ms_with_state']:12.2f} {CALVIN_REFERENCE['reset_ms_with_state']:12.1f}")
    print(f"{'reset random (ms)':32s} {figures['reset_ms_random']:12.2f}")
    print(f"{'render static 200x200 (ms)':32s} {figures['render_ms_static_200']:12.2f} {'36-40':>12s}")
    print(f"{'render gripper 84x84 (ms)':32s} {figures['render_ms_gripper_84']:12.2f} {'20-22':>12s}")
    print(f"{'single-task setup (s)':32s} {figures['single_task_setup_s']:12.2f}   rendered at every step: "
          f"{figures['single_task_setup_rendered_s']:.2f} s "
          f"({figures['single_task_setup_rendered_s'] / figures['single_task_setup_s']:.2f}x)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)
    with_cams.close()
    blind.close()


if __name__ == "__main__":
    main()
