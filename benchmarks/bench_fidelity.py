"""The built-in scene held against the real calvin_env, on the same work, in one run.

    python benchmarks/bench_fidelity.py [--parts speed,closed,open,images] [--chains 100] [--scene D]
        [--workers 2] [--lateness 10] [--image-chains 10] [--image-stride 30] [--pngs 8]
        [--steps 200] [--repeats 3] [--out runs/fidelity]

Needs calvin_env installed in the venv (env=calvin, `harness.envs.calvin`). Each backend is built the
way the evaluation builds it (configs/env/{builtin,calvin}.yaml: a fresh built-in env per chain, one
calvin_env reused across chains, as CALVIN's evaluation does).

Parts:
  speed   env steps/s of both backends with both cameras and with none (random relative actions, the
          gripper toggling, as benchmarks/bench_env.py), each measurement in a fresh process, repeats
          interleaved; medians and the built-in/calvin_env ratio.
  closed  the scripted expert on CALVIN's first N chains in both (the harness's JobRunner and CALVIN's
          metrics): avg. len, chain success rates and per-task success side by side.
  open    from each chain's start state, the expert's actions recorded in one simulator are replayed in
          the other, both directions. Agreement of the oracle's outcome: on the chain's first subtask
          action for action (success within the recorded steps), and on the whole chain, where subtask i
          of the replay starts (its start info is taken) at the step where the recording's started and
          counts as done when the oracle holds up to `lateness` steps after the recording's subtask
          ended; the chain's outcome is its number of consecutive successes. Divergence over the episode:
          TCP distance, the largest block displacement and the largest furniture-joint difference
          between the replay and the recording, frame by frame.
  images  states along the expert's first chains in calvin_env, every `image-stride` frames: both
          backends reset to each state, both cameras rendered (TinyRenderer); the mean absolute pixel
          difference per camera (0-255) and side-by-side PNGs (calvin_env | built-in | |difference| x 4).

Every process that builds a calvin_env builds it first: calvin_env adds its robot's base cylinder to
PyBullet client 0 whatever its own client is, so a built-in env built before it would get that body.
Results go to OUT/summary.json and OUT/summary.md; a run of some parts keeps the other parts' earlier
figures in the summary, each named with the command that measured it (and none from another scene or
--fresh-envs setting).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_env import random_actions, steps_per_second  # noqa: E402

from harness.envs.base import CAMERA_NAMES  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = ("calvin", "builtin")
PARTS = ("speed", "closed", "open", "images")
DIRECTIONS = (("calvin", "builtin"), ("builtin", "calvin"))  # (recorded in, replayed in)
EP_LEN = 360


# --------------------------------------------------------------------------------------------------
# Backends as the evaluation builds them


def env_config(backend: str, scene: str, fresh: bool = False):
    """The EnvConfig of configs/env/<backend>.yaml (renderer, fresh_per_chain) for `scene`; `fresh`
    builds a new env for every chain whatever the config says."""
    from dataclasses import replace

    from omegaconf import OmegaConf

    from harness.eval.specs import EnvConfig

    cfg = OmegaConf.to_container(OmegaConf.load(ROOT / "configs" / "env" / f"{backend}.yaml"), resolve=True)
    cfg.pop("defaults")  # the rest builds on EnvConfig's defaults, as hydra composes it
    env = EnvConfig.from_dict({**cfg, "scene": scene})
    return replace(env, fresh_per_chain=True) if fresh else env


def run_in_processes(calls: Sequence[tuple[Callable, tuple]], workers: int) -> list[Any]:
    """Each call in its own fresh (spawned) process, at most `workers` at a time; results in order."""
    context = mp.get_context("spawn")
    with ProcessPoolExecutor(max_workers=max(1, workers), mp_context=context, max_tasks_per_child=1) as pool:
        futures = [pool.submit(fn, *args) for fn, args in calls]
        return [f.result() for f in futures]


# --------------------------------------------------------------------------------------------------
# Speed


def measure_speed(backend: str, scene: str, cameras: bool, steps: int) -> float:
    env = env_config(backend, scene).build(cameras=CAMERA_NAMES if cameras else ())
    try:
        actions = random_actions(steps, seed=0)
        steps_per_second(env, actions[:10])  # warm-up: first renders, caches
        return steps_per_second(env, actions)
    finally:
        env.close()


def speed_part(args: argparse.Namespace) -> dict[str, Any]:
    runs: dict[str, list[float]] = {f"{b}_{c}": [] for b in BACKENDS for c in ("both", "none")}
    for _ in range(args.repeats):  # interleaved, so that a busy moment hits every figure alike
        for backend in BACKENDS:
            for cams, steps in (("both", args.steps), ("none", args.steps * 5)):
                (rate,) = run_in_processes([(measure_speed, (backend, args.scene, cams == "both", steps))], 1)
                runs[f"{backend}_{cams}"].append(rate)
    med = {k: statistics.median(v) for k, v in runs.items()}
    return {
        "steps_per_s": med,
        "runs": runs,
        "ratio_both_cameras": med["builtin_both"] / med["calvin_both"],
        "ratio_no_cameras": med["builtin_none"] / med["calvin_none"],
        "steps": args.steps,
        "repeats": args.repeats,
    }


# --------------------------------------------------------------------------------------------------
# The expert's chains, recorded


class RecordingAgent:
    """The scripted expert, keeping every action it returns, one list per subtask."""

    def __init__(self) -> None:
        from agents.scripted import ScriptedExpert

        self.expert = ScriptedExpert()
        self.spec = self.expert.spec
        self.actions: list[list[np.ndarray]] = []

    def bind_env(self, description: Any) -> None:
        """The expert plans in the scene of the env it runs in (the runner binds it)."""
        self.expert.bind_env(description)
        self.spec = self.expert.spec

    def new_chain(self, seed: int) -> None:
        self.expert.new_chain(seed)
        self.actions = []

    def reset(self) -> None:
        self.expert.reset()
        self.actions.append([])

    def step(self, obs: dict[str, Any], instruction: str) -> np.ndarray:
        action = np.asarray(self.expert.step(obs, instruction), dtype=np.float64)
        self.actions[-1].append(action.copy())
        return action


def record_chains(backend: str, scene: str, num_chains: int, fresh: bool = False) -> list[dict[str, Any]]:
    """The expert on CALVIN's first chains: each chain's job record, actions per subtask, and the
    robot_obs / scene_obs of every frame (frame 0 = the start state)."""
    from harness.eval.jobs import chain_jobs
    from harness.eval.runner import JobRunner, RunSettings

    agent = RecordingAgent()
    runner = JobRunner(env_config(backend, scene, fresh), agent, RunSettings(ep_len=EP_LEN, video_chains=num_chains))
    chains = []
    try:
        for job in chain_jobs(num_chains):
            record, traces = runner.run(job)
            robot = [traces[0].robot_obs[0]] + [o for t in traces for o in t.robot_obs[1:]]
            states = [traces[0].scene_obs[0]] + [o for t in traces for o in t.scene_obs[1:]]
            actions = [np.asarray(a, dtype=np.float64).reshape(-1, 7) for a in agent.actions]
            if sum(len(a) for a in actions) != len(robot) - 1:
                raise RuntimeError(f"{job.key}: {sum(len(a) for a in actions)} actions for {len(robot) - 1} steps")
            chains.append({"record": record, "actions": actions, "robot_obs": np.array(robot), "scene_obs": np.array(states)})
    finally:
        runner.close()
    return chains


def record_both(args: argparse.Namespace, num_chains: int) -> dict[str, list[dict[str, Any]]]:
    calls = [(record_chains, (backend, args.scene, num_chains, args.fresh_envs)) for backend in BACKENDS]
    return dict(zip(BACKENDS, run_in_processes(calls, args.workers)))


# --------------------------------------------------------------------------------------------------
# Closed loop


def closed_part(recordings: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    from harness.eval.results import calvin_metrics

    metrics = {b: calvin_metrics([c["record"] for c in recordings[b]]) for b in BACKENDS}
    same = sum(a["record"]["completed"] == b["record"]["completed"] for a, b in zip(recordings["calvin"], recordings["builtin"]))
    return {
        "chains": len(recordings["calvin"]),
        **{b: metrics[b] for b in BACKENDS},
        "avg_len_difference": metrics["builtin"]["avg_seq_len"] - metrics["calvin"]["avg_seq_len"],
        "chains_with_same_length": same,
    }


# --------------------------------------------------------------------------------------------------
# Open loop


def replay_chains(backend: str, scene: str, recordings: list[dict[str, Any]], lateness: int,
                  fresh: bool = False) -> list[dict[str, Any]]:
    """Each recorded chain's actions replayed in `backend` from the chain's start state."""
    from harness.eval.jobs import chain_jobs
    from harness.tasks import TaskOracle, initial_state

    cfg = env_config(backend, scene, fresh)
    oracle = TaskOracle()
    jobs = chain_jobs(len(recordings))
    env = None
    results = []
    try:
        for job, recording in zip(jobs, recordings):
            if env is None or cfg.fresh_per_chain:
                if env is not None:
                    env.close()
                env = cfg.build(cameras=())
            robot_obs, scene_obs = initial_state(job.condition, scene)
            obs = env.reset(robot_obs=robot_obs, scene_obs=scene_obs)
            results.append(replay_one(env, oracle, recording, obs, scene, lateness))
    finally:
        if env is not None:
            env.close()
    return results


def replay_one(env, oracle, recording: dict[str, Any], obs: dict[str, Any], scene: str, lateness: int) -> dict[str, Any]:
    from harness.tasks.info import InfoView

    tasks = [s["task"] for s in recording["record"]["subtasks"]]
    lengths = [len(a) for a in recording["actions"]]
    starts = np.cumsum([0, *lengths[:-1]])
    ends = starts + np.array(lengths)
    stream = np.concatenate(recording["actions"]) if sum(lengths) else np.zeros((0, 7))
    hold = np.r_[np.zeros(6), stream[-1, 6] if len(stream) else 1.0]
    start_info: dict[int, InfoView] = {}
    done_at: dict[int, int] = {}
    robot, states = [obs["robot_obs"]], [obs["scene_obs"]]
    info = env.get_info()
    for t in range(int(ends[-1]) + lateness):
        for i in np.flatnonzero(starts == t):
            start_info[int(i)] = InfoView(info)
        obs, _, _, info = env.step(stream[t] if t < len(stream) else hold)
        if t < len(stream):
            robot.append(obs["robot_obs"])
            states.append(obs["scene_obs"])
        for i, start in start_info.items():
            if i not in done_at and t + 1 <= ends[i] + lateness and oracle.is_completed(tasks[i], start, info):
                done_at[i] = t + 1
    completed = 0
    while completed in done_at:
        completed += 1
    return {
        "first_subtask_success": 0 in done_at and done_at[0] <= ends[0],
        "completed": completed,
        **divergence(recording, np.array(robot), np.array(states), scene),
    }


def divergence(recording: dict[str, Any], robot: np.ndarray, states: np.ndarray, scene: str) -> dict[str, np.ndarray]:
    """Per frame: TCP distance, the largest block displacement, the largest furniture-joint difference (m)."""
    from harness.sim.layout import BLOCK_COLORS, get_layout

    layout = get_layout(scene)
    tcp = np.linalg.norm(robot[:, :3] - recording["robot_obs"][:, :3], axis=1)
    blocks = np.max([
        np.linalg.norm(states[:, layout.block_obs_slice(c)][:, :3] - recording["scene_obs"][:, layout.block_obs_slice(c)][:, :3], axis=1)
        for c in BLOCK_COLORS
    ], axis=0)
    furniture = np.max(np.abs(states[:, :4] - recording["scene_obs"][:, :4]), axis=1)
    return {"tcp": tcp, "blocks": blocks, "furniture": furniture}


def open_part(args: argparse.Namespace, recordings: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    calls = [(replay_chains, (target, args.scene, recordings[source], args.lateness, args.fresh_envs))
             for source, target in DIRECTIONS]
    replays = run_in_processes(calls, args.workers)
    out: dict[str, Any] = {"chains": len(recordings["calvin"]), "lateness_steps": args.lateness}
    for (source, target), replayed in zip(DIRECTIONS, replays):
        recorded = recordings[source]
        first = [r["first_subtask_success"] == (c["record"]["subtasks"][0]["success"]) for r, c in zip(replayed, recorded)]
        whole = [r["completed"] == c["record"]["completed"] for r, c in zip(replayed, recorded)]
        out[f"{source}_to_{target}"] = {
            "first_subtask_agreement": float(np.mean(first)),
            "whole_chain_agreement": float(np.mean(whole)),
            "recorded_avg_len": float(np.mean([c["record"]["completed"] for c in recorded])),
            "replayed_avg_len": float(np.mean([r["completed"] for r in replayed])),
            "first_subtask_disagreements": task_counts(c["record"]["subtasks"][0]["task"] for c, ok in zip(recorded, first) if not ok),
            # the subtask at which the replayed chain's outcome parts from the recording's
            "whole_chain_disagreements": task_counts(
                c["record"]["subtasks"][min(r["completed"], c["record"]["completed"])]["task"]
                for r, c, ok in zip(replayed, recorded, whole) if not ok
            ),
            "disagreeing_chains": [c["record"]["key"] for c, ok in zip(recorded, whole) if not ok],
            **{f"{k}_divergence_mm": divergence_stats([r[k] for r in replayed]) for k in ("tcp", "blocks", "furniture")},
        }
    return out


def task_counts(tasks) -> dict[str, int]:
    counts: dict[str, int] = {}
    for task in tasks:
        counts[task] = counts.get(task, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def divergence_stats(per_chain: list[np.ndarray]) -> dict[str, float]:
    frames = np.concatenate(per_chain) * 1000
    return {
        "mean": float(frames.mean()),
        "p95": float(np.percentile(frames, 95)),
        "mean_of_chain_max": float(np.mean([c.max() * 1000 for c in per_chain])),
    }


# --------------------------------------------------------------------------------------------------
# Images


def render_pairs(scene: str, states: list[tuple[np.ndarray, np.ndarray]], png_dir: str, pngs: int) -> dict[str, list[float]]:
    """Both backends at each state, both cameras; the mean absolute difference per camera and state."""
    calvin = env_config("calvin", scene).build(cameras=CAMERA_NAMES)  # first: see the module docstring
    builtin = env_config("builtin", scene).build(cameras=CAMERA_NAMES)
    diffs: dict[str, list[float]] = {c: [] for c in CAMERA_NAMES}
    try:
        for k, (robot_obs, scene_obs) in enumerate(states):
            a = calvin.reset(robot_obs=robot_obs, scene_obs=scene_obs)["rgb_obs"]
            b = builtin.reset(robot_obs=robot_obs, scene_obs=scene_obs)["rgb_obs"]
            for cam in CAMERA_NAMES:
                diffs[cam].append(float(np.abs(a[f"rgb_{cam}"].astype(int) - b[f"rgb_{cam}"].astype(int)).mean()))
            if k < pngs:
                save_side_by_side(Path(png_dir) / f"state_{k:03d}.png", a, b)
    finally:
        builtin.close()
        calvin.close()
    return diffs


def save_side_by_side(path: Path, calvin: dict[str, np.ndarray], builtin: dict[str, np.ndarray]) -> None:
    """Rows: static, gripper (scaled up to the static camera's width); columns: calvin_env, built-in,
    |difference| x 4."""
    from PIL import Image

    rows = []
    for cam in CAMERA_NAMES:
        a, b = calvin[f"rgb_{cam}"], builtin[f"rgb_{cam}"]
        diff = np.clip(np.abs(a.astype(int) - b.astype(int)) * 4, 0, 255).astype(np.uint8)
        row = np.concatenate([a, b, diff], axis=1)
        scale = 200 / a.shape[0]
        image = Image.fromarray(row).resize((round(row.shape[1] * scale), 200), Image.NEAREST)
        rows.append(np.asarray(image))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, axis=0)).save(path)


def images_part(args: argparse.Namespace, recordings: list[dict[str, Any]]) -> dict[str, Any]:
    states = [
        (c["robot_obs"][k], c["scene_obs"][k])
        for c in recordings[: args.image_chains]
        for k in range(0, len(c["robot_obs"]), args.image_stride)
    ]
    png_dir = Path(args.out) / "images"
    (diffs,) = run_in_processes([(render_pairs, (args.scene, states, str(png_dir), args.pngs))], 1)
    return {
        "states": len(states),
        "chains": min(args.image_chains, len(recordings)),
        "stride": args.image_stride,
        "mean_abs_diff": {c: float(np.mean(v)) for c, v in diffs.items()},
        "p90_abs_diff": {c: float(np.percentile(v, 90)) for c, v in diffs.items()},
        "pngs": sorted(str(p.relative_to(args.out)) for p in png_dir.glob("state_*.png"))[: args.pngs],
    }


# --------------------------------------------------------------------------------------------------
# Report


def markdown(summary: dict[str, Any]) -> str:
    lines = [f"# Fidelity: built-in scene vs calvin_env (scene {summary['scene']})", "", f"`{summary['command']}`", "",
             f"Machine: {summary['machine']}", "",
             "Envs per chain (closed and open loop): " + ("a new one in both backends" if summary.get("fresh_envs") else
                                                          "as configured (a new built-in env per chain, one calvin_env reused)"), ""]
    kept = {part: c for part, c in summary.get("part_commands", {}).items()
            if part in summary and c != summary["command"]}
    lines += [f"Part `{part}` kept from an earlier run: `{c}`" for part, c in kept.items()] + ([""] if kept else [])
    if "speed" in summary:
        s = summary["speed"]
        lines += ["## Speed (env steps/s, median)", "", "| cameras | calvin_env | built-in | ratio |", "|---|---:|---:|---:|"]
        for cams, key in (("static + gripper", "both"), ("none", "none")):
            ratio = s["ratio_both_cameras"] if key == "both" else s["ratio_no_cameras"]
            lines.append(f"| {cams} | {s['steps_per_s'][f'calvin_{key}']:.1f} | {s['steps_per_s'][f'builtin_{key}']:.1f} | {ratio:.2f}x |")
        lines.append("")
    if "closed" in summary:
        c = summary["closed"]
        lines += [f"## Closed loop: the scripted expert on CALVIN's first {c['chains']} chains", "",
                  "| | calvin_env | built-in |", "|---|---:|---:|",
                  f"| avg. len | {c['calvin']['avg_seq_len']:.2f} | {c['builtin']['avg_seq_len']:.2f} |"]
        for i in "12345":
            lines.append(f"| {i} in a row | {c['calvin']['chain_sr'][i]:.1%} | {c['builtin']['chain_sr'][i]:.1%} |")
        tasks = list(dict.fromkeys([*c["calvin"]["task_info"], *c["builtin"]["task_info"]]))
        for t in tasks:
            cells = [f"{c[b]['task_info'][t]['success']}/{c[b]['task_info'][t]['total']}" if t in c[b]["task_info"] else "-" for b in BACKENDS]
            lines.append(f"| {t} | {cells[0]} | {cells[1]} |")
        lines += ["", f"Chains with the same length in both: {c['chains_with_same_length']} of {c['chains']}.", ""]
    if "open" in summary:
        o = summary["open"]
        lines += [f"## Open loop: the expert's actions replayed in the other simulator ({o['chains']} chains)", "",
                  f"| recorded in -> replayed in | first subtask agrees | whole chain agrees (lateness {o['lateness_steps']}) "
                  "| avg. len recorded -> replayed | TCP divergence mm (mean / p95) | blocks mm (mean / p95) | furniture mm (mean / p95) |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for source, target in DIRECTIONS:
            d = o[f"{source}_to_{target}"]
            div = [f"{d[f'{k}_divergence_mm']['mean']:.1f} / {d[f'{k}_divergence_mm']['p95']:.1f}" for k in ("tcp", "blocks", "furniture")]
            lines.append(f"| {source} -> {target} | {d['first_subtask_agreement']:.0%} | {d['whole_chain_agreement']:.0%} "
                         f"| {d['recorded_avg_len']:.2f} -> {d['replayed_avg_len']:.2f} | {div[0]} | {div[1]} | {div[2]} |")
        lines.append("")
        for source, target in DIRECTIONS:
            d = o[f"{source}_to_{target}"]
            for key, label in (("first_subtask_disagreements", "first subtasks that disagree"),
                               ("whole_chain_disagreements", "where whole chains part")):
                counts = ", ".join(f"{t} {n}" for t, n in d.get(key, {}).items()) or "none"
                lines.append(f"* {source} -> {target}, {label}: {counts}")
        lines.append("")
    if "images" in summary:
        im = summary["images"]
        lines += [f"## Images: {im['states']} states of the expert's first {im['chains']} chains in calvin_env (every {im['stride']} frames)", "",
                  "| camera | mean abs pixel difference (0-255) | 90th percentile over states |", "|---|---:|---:|"]
        for cam in CAMERA_NAMES:
            lines.append(f"| {cam} | {im['mean_abs_diff'][cam]:.1f} | {im['p90_abs_diff'][cam]:.1f} |")
        lines += ["", "Side by side (calvin_env | built-in | |difference| x 4): " + ", ".join(f"[{p}]({p})" for p in im["pngs"]), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    parser.add_argument("--chains", type=int, default=100, help="chains for the closed and open loop parts")
    parser.add_argument("--scene", default="D")
    parser.add_argument("--workers", type=int, default=2, help="processes at a time (recording, replaying)")
    parser.add_argument("--lateness", type=int, default=10, help="steps a replayed subtask may finish late")
    parser.add_argument("--image-chains", type=int, default=10)
    parser.add_argument("--image-stride", type=int, default=30, help="every n-th frame of those chains")
    parser.add_argument("--pngs", type=int, default=8, help="side-by-side PNGs to save")
    parser.add_argument("--steps", type=int, default=200, help="speed: steps per measurement with cameras (x5 without)")
    parser.add_argument("--repeats", type=int, default=3, help="speed: interleaved measurements per figure")
    parser.add_argument("--fresh-envs", action="store_true",
                        help="closed and open loop: a new env for every chain in both backends (calvin_env's config "
                             "reuses one, and its reset keeps block velocities and contacts from the chain before)")
    parser.add_argument("--out", default="runs/fidelity")
    args = parser.parse_args()
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"--parts: unknown part(s) {unknown}; expected a subset of {list(PARTS)}")
    for name in ("chains", "image_chains", "image_stride", "steps", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    from harness.envs.calvin import _import_calvin_env

    _import_calvin_env()  # a clear install hint before any process starts

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "summary.json"
    summary: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    kept = [part for part in PARTS if part in summary and part not in parts]
    if kept and (summary.get("scene"), summary.get("fresh_envs")) != (args.scene, args.fresh_envs):
        print(f"{path}: its {', '.join(kept)} part(s) were measured on scene {summary.get('scene')} (fresh_envs "
              f"{summary.get('fresh_envs')}), not {args.scene} ({args.fresh_envs}): not kept beside this run's")
        summary = {}
    command = "python benchmarks/bench_fidelity.py " + " ".join(sys.argv[1:])
    summary.update({
        "scene": args.scene,
        "fresh_envs": args.fresh_envs,
        "command": command,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus, load {os.getloadavg()[0]:.2f}",
    })
    # a part kept from an earlier run (this one measured others) says which command measured it
    summary["part_commands"] = {**summary.get("part_commands", {}), **{part: command for part in parts}}
    started = time.perf_counter()
    if "speed" in parts:
        summary["speed"] = speed_part(args)
    recordings = None
    if {"closed", "open"} & set(parts):
        recordings = record_both(args, args.chains)
        if "closed" in parts:
            summary["closed"] = closed_part(recordings)
        if "open" in parts:
            summary["open"] = open_part(args, recordings)
    if "images" in parts:
        if recordings is None or len(recordings["calvin"]) < args.image_chains:
            (calvin_chains,) = run_in_processes([(record_chains, ("calvin", args.scene, args.image_chains, args.fresh_envs))], 1)
        else:
            calvin_chains = recordings["calvin"]
        summary["images"] = images_part(args, calvin_chains)
    summary["wall_s"] = round(time.perf_counter() - started, 1)
    path.write_text(json.dumps(summary, indent=2))
    text = markdown(summary)
    (out / "summary.md").write_text(text)
    print(text)
    print(f"written: {path}, {out / 'summary.md'}")


if __name__ == "__main__":
    main()
