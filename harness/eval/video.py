"""Videos without rendering during the rollouts.

While a chain runs, the worker keeps only the cheap state of every frame (robot_obs, scene_obs and the
agent's planned TCP path); the parent saves the traces of the chains that get videos to `traces/`.
A rendering env (static camera only) then restores each recorded state with
`env.reset(robot_obs, scene_obs)`, which the built-in env does exactly, so the frames are the images
the run would have shown. A perturbed run's videos show what its policy saw: the rendering env has the
run's visual perturbations (camera pose, light, colours, texture, blur, noise), drawn for each chain from its
seed as in the run; the noise is drawn anew, so only it differs from the policy's pixels. On each frame:
the instruction, the executed TCP path of the subtask so far, the agent's planned chunk where it has one,
and the subtask's progress and outcome.

Which traces are kept, with bounded memory and disk: every chain with index < `video_chains` (the whole
chain), and the failed subtask of the `video_failures` failing chains with the lowest indices.

When a video is rendered: as soon as it is sure to be in that selection (`TraceStore.due`), the parent
queues it as a `VideoJob` for the worker pool's render process (harness/eval/runner.py), so videos are
made while the rollouts go on. Whatever is left (workers=0 renders between jobs; a render process that
died; a run killed before) is rendered at the end (`render_videos`). A video is written under a hidden name and renamed when complete, so a kill never
leaves a file that looks like a finished video.
"""

from __future__ import annotations

import json
import os
import time
import traceback
import warnings
from collections import deque
from contextlib import suppress
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from harness.envs.perturbations import AXES, SCENE_LOOK_AXES, Perturbations
from harness.eval.rollout import SubtaskTrace
from harness.eval.specs import EnvConfig
from harness.lifetime import end_with_parent
from harness.sim.cameras import DEFAULT_SPECS, CameraSpec, static_view_matrix
from harness.spatial import project_points

EXECUTED_COLOR = (40, 220, 90)
PLAN_COLOR = (255, 80, 200)
TEXT_BAND = 22


def job_label(key: str) -> str:
    """"chain/7" -> "chain_0007", "open_drawer/3" -> "open_drawer_0003"."""
    name, _, number = key.rpartition("/")
    return f"{name}_{int(number):04d}" if number.isdigit() else key.replace("/", "_")


@dataclass(frozen=True)
class TraceFile:
    path: Path
    meta: dict[str, Any]

    @property
    def index(self) -> int:
        return int(self.meta["index"])

    @property
    def video_name(self) -> str:
        label = job_label(self.meta["key"])
        if self.meta["full"]:
            return label
        sub = self.meta["subtasks"][-1]
        return f"fail_{label}_s{len(self.meta['outcomes'])}_{sub['task']}_{self.meta['outcomes'][-1]['reason']}"


def _write_trace(path: Path, meta: dict[str, Any], traces: Sequence[SubtaskTrace]) -> None:
    arrays: dict[str, np.ndarray] = {"meta": np.array(json.dumps(meta))}
    for k, t in enumerate(traces):
        arrays[f"robot_obs_{k}"] = np.stack(t.robot_obs)
        arrays[f"scene_obs_{k}"] = np.stack(t.scene_obs)
        plans = [np.zeros((0, 3)) if p is None else p for p in t.plans]
        arrays[f"plan_points_{k}"] = np.concatenate(plans) if plans else np.zeros((0, 3))
        arrays[f"plan_offsets_{k}"] = np.cumsum([0] + [len(p) for p in plans])
    tmp = path.with_name(path.name + ".tmp")  # not *.npz: a kill mid-write leaves nothing that looks like a trace
    with open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    tmp.replace(path)


def read_trace_meta(path: Path) -> dict[str, Any]:
    with np.load(path) as data:
        return json.loads(str(data["meta"]))


def load_trace(path: Path) -> tuple[dict[str, Any], list[SubtaskTrace]]:
    with np.load(path) as data:
        meta = json.loads(str(data["meta"]))
        traces = []
        for k, sub in enumerate(meta["subtasks"]):
            points, offsets = data[f"plan_points_{k}"], data[f"plan_offsets_{k}"]
            plans = [points[a:b] if b > a else None for a, b in zip(offsets[:-1], offsets[1:])]
            traces.append(SubtaskTrace(sub["task"], sub["instruction"], list(data[f"robot_obs_{k}"]),
                                       list(data[f"scene_obs_{k}"]), plans, sub.get("end_state")))
    return meta, traces


class TraceStore:
    """The traces folder: keeps what the video settings ask for and nothing more."""

    def __init__(self, folder: Path, video_chains: int, video_failures: int,
                 order: Mapping[str, int] | None = None) -> None:
        """`order`: job key -> position in this run's job list. Traces of other jobs (a run resumed with fewer
        chains, or single-task episodes numbered otherwise before) stay on disk and out of this run's videos;
        positions, not the index a trace was written with, decide which come first."""
        self.folder = Path(folder)
        self.video_chains, self.video_failures = video_chains, video_failures
        self.order = order
        self.full: list[TraceFile] = []  # kept whole-chain traces
        self.failures: list[TraceFile] = []  # kept failure traces, lowest positions first
        self.handed_out: set[str] = set()  # video names that due() returned already
        if self.folder.exists():
            for path in sorted(self.folder.glob("*.npz")):
                try:
                    tf = TraceFile(path, read_trace_meta(path))
                except (OSError, ValueError, KeyError):
                    path.unlink()  # cut short by a kill: the chain's video is lost, the results are not
                    continue
                if not self._current(tf):
                    continue
                if not tf.meta["full"]:
                    self.failures.append(tf)
                elif self._position(tf) < video_chains:
                    self.full.append(tf)
            self.failures.sort(key=self._position)

    def _current(self, tf: TraceFile) -> bool:
        return self.order is None or tf.meta["key"] in self.order

    def _position(self, tf: TraceFile) -> int:
        return tf.index if self.order is None else self.order[tf.meta["key"]]

    def add(self, record: dict[str, Any], traces: list[SubtaskTrace] | None) -> None:
        if not traces:
            return
        full = record["index"] < self.video_chains
        if not full:
            if self.video_failures <= 0 or record["completed"] == len(record["tasks"]):
                return
            if len(self.failures) >= self.video_failures and record["index"] > self._position(self.failures[-1]):
                return
        meta = {
            "key": record["key"], "index": record["index"], "seed": record["seed"], "tasks": record["tasks"],
            "full": full,
            "subtasks": [{"task": t.task, "instruction": t.instruction, "end_state": t.end_state} for t in traces],
            "outcomes": record["subtasks"],
        }
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{job_label(record['key'])}.npz"
        _write_trace(path, meta, traces)
        if full:
            self.full.append(TraceFile(path, meta))
            return
        self.failures = sorted([*self.failures, TraceFile(path, meta)], key=self._position)
        while len(self.failures) > self.video_failures:
            self.failures.pop().path.unlink(missing_ok=True)

    def due(self, finished_below: int) -> list[TraceFile]:
        """The kept traces whose video is sure to be in the final selection, each returned once: every
        whole chain, and a failure once all jobs with a lower index have finished (`finished_below`:
        jobs 0 .. finished_below - 1 have), because then no failure can arrive that would push it out."""
        sure = self.full + [tf for tf in self.failures[: self.video_failures] if self._position(tf) < finished_below]
        new = [tf for tf in sure if tf.video_name not in self.handed_out]
        self.handed_out.update(tf.video_name for tf in new)
        return new

    def selected(self) -> list[TraceFile]:
        """The traces to render, by index: the first chains in full, then the lowest-index failures."""
        if not self.folder.exists():
            return []
        files = [tf for tf in (TraceFile(p, read_trace_meta(p)) for p in sorted(self.folder.glob("*.npz")))
                 if self._current(tf)]
        full = [tf for tf in files if tf.meta["full"] and self._position(tf) < self.video_chains]
        failures = sorted((tf for tf in files if not tf.meta["full"]), key=self._position)[: self.video_failures]
        return sorted(full + failures, key=lambda tf: (self._position(tf), not tf.meta["full"]))


# --- drawing ---------------------------------------------------------------------------------------


class FrameDrawer:
    """Upscales a static-camera frame and draws the instruction, the TCP paths and the progress on it."""

    def __init__(self, size: int, scale: int = 2, spec: CameraSpec = DEFAULT_SPECS["static"],
                 view: tuple[float, ...] | None = None) -> None:
        self.size, self.scale = size, scale
        self.view, self.proj = view or static_view_matrix(), spec.projection_matrix()
        self.font = ImageFont.load_default(size=12 if scale >= 2 else 9)

    def pixels(self, points: np.ndarray) -> list[tuple[float, float]]:
        uv = project_points(points, self.view, self.proj, self.size, self.size) * self.scale
        return [(float(u), float(v)) for u, v in uv if np.isfinite(u) and np.isfinite(v)]

    def draw(self, rgb: np.ndarray, instruction: str, executed: np.ndarray, plan: np.ndarray | None,
             footer: str, footer_color: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
        side = self.size * self.scale
        image = Image.fromarray(rgb).resize((side, side), Image.BILINEAR)
        canvas = Image.new("RGB", (side, side + 2 * TEXT_BAND), (20, 20, 20))
        canvas.paste(image, (0, TEXT_BAND))
        d = ImageDraw.Draw(canvas)
        shift = lambda pts: [(u, v + TEXT_BAND) for u, v in pts]  # noqa: E731
        path = shift(self.pixels(executed))
        if len(path) > 1:
            d.line(path, fill=EXECUTED_COLOR, width=2)
        if plan is not None and len(plan):
            planned = shift(self.pixels(np.vstack([executed[-1:], plan])))
            d.line(planned, fill=PLAN_COLOR, width=2)
            for u, v in planned[1:]:
                d.ellipse((u - 2, v - 2, u + 2, v + 2), fill=PLAN_COLOR)
        if path:
            u, v = path[-1]
            d.ellipse((u - 3, v - 3, u + 3, v + 3), outline=EXECUTED_COLOR, width=2)
        d.text((4, 4), instruction, fill=(255, 255, 255), font=self.font)
        d.text((4, side + TEXT_BAND + 4), footer, fill=footer_color, font=self.font)
        return np.asarray(canvas)


def _frames(env: Any, drawer: FrameDrawer, meta: dict[str, Any], traces: list[SubtaskTrace],
            ep_len: int, stride: int) -> Iterator[np.ndarray]:
    label = job_label(meta["key"])
    first = len(meta["outcomes"]) - len(traces)  # a failure clip holds only the failed subtask
    for k, trace in enumerate(traces):
        outcome = meta["outcomes"][first + k]
        positions = np.stack([r[:3] for r in trace.robot_obs])
        last = len(trace.robot_obs) - 1
        for t in list(range(0, last, stride)) + [last]:
            obs = env.reset(robot_obs=trace.robot_obs[t], scene_obs=trace.scene_obs[t])
            footer = f"{label}  {first + k + 1}/{len(meta['tasks'])} {trace.task}  step {t}/{ep_len}"
            color = (255, 255, 255)
            if t == last:
                footer += f"  {outcome['reason'].upper()}"
                color = EXECUTED_COLOR if outcome["success"] else (255, 90, 90)
            yield drawer.draw(obs["rgb_obs"]["rgb_static"], trace.instruction, positions[: t + 1], trace.plans[t], footer, color)


def write_video(path: Path, frames: Iterator[np.ndarray], fps: int, fmt: str) -> Path:
    """MP4 (H.264 through imageio-ffmpeg, streamed) or GIF; `path` without its suffix. Written under a
    hidden name of this process first (`.<name>.<pid>.partial.<fmt>`, which no video lookup matches: a
    worker of a killed run may still be writing its copy) and renamed when complete."""
    if fmt not in ("mp4", "gif"):
        raise ValueError(f"video_format must be 'mp4' or 'gif', got {fmt!r}")
    out = path.with_suffix(f".{fmt}")
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial.{fmt}")
    try:
        if fmt == "mp4":
            _write_mp4(partial, frames, fps)
        else:
            images = [Image.fromarray(f) for f in frames]
            images[0].save(partial, format="GIF", save_all=True, append_images=images[1:],
                           duration=max(1, round(1000 / fps)), loop=0)
        partial.replace(out)
    finally:
        partial.unlink(missing_ok=True)
    return out


def _write_mp4(path: Path, frames: Iterator[np.ndarray], fps: int) -> None:
    import imageio.v2 as imageio

    writer = imageio.get_writer(path, fps=fps, codec="libx264", macro_block_size=1, quality=7, ffmpeg_log_level="error")
    try:
        for frame in frames:
            writer.append_data(frame)
    except BaseException:
        # imageio's `with` leaves ffmpeg running on an error, and it would write the file after we remove it
        with suppress(Exception):
            writer.close()
        raise
    writer.close()


@dataclass(frozen=True)
class VideoSettings:
    ep_len: int = 360  # for the footer's "step t/ep_len"
    fps: int = 30
    fmt: str = "mp4"  # mp4 | gif
    stride: int = 1  # render every n-th step
    scale: int = 2  # upscaling of the static camera's frames


@dataclass(frozen=True)
class VideoJob:
    """One video to render from a saved trace: all a worker process needs."""

    trace: Path
    target: Path  # the video's path without its suffix
    settings: VideoSettings


@dataclass(frozen=True)
class VideoOutcome:
    target: Path
    seconds: float
    error: str | None = None  # the traceback when rendering failed


def video_jobs(traces: Sequence[TraceFile], video_dir: Path, settings: VideoSettings) -> list[VideoJob]:
    """Jobs for the traces whose video does not exist yet."""
    return [VideoJob(tf.path, video_dir / tf.video_name, settings) for tf in traces
            if not any(video_dir.glob(f"{tf.video_name}.*"))]


class VideoRenderer:
    """Renders VideoJobs with one rendering env (static camera only), built on first use."""

    def __init__(self, env_cfg: EnvConfig) -> None:
        # The recorded states already hold what the dynamics, latency and start-pose axes did; the visual axes
        # are drawn again per chain, so the picture is the policy's (docs/ROBUSTNESS.md).
        self.env_cfg = replace(env_cfg, perturb=visual_only(env_cfg.perturb))
        self.env: Any = None

    def chain_env(self, meta: dict[str, Any]) -> Any:
        """The rendering env (built on first use) with the visual perturbations of the trace's chain."""
        if self.env is None:
            self.env = self.env_cfg.build(cameras=("static",))
        if hasattr(self.env, "new_chain"):  # a perturbed env: the chain's draws come from its seed
            if "seed" not in meta:
                raise ValueError(f"chain {meta['index']}'s trace has no seed (written before traces kept it): "
                                 "its perturbed video cannot show what the policy saw")
            self.env.new_chain(meta["seed"])
        return self.env

    def try_render(self, job: VideoJob) -> VideoOutcome:
        """render(), reporting a failure instead of raising it (in a worker, beside the rollouts)."""
        started = time.perf_counter()
        try:
            self.render(job)
        except Exception:  # noqa: BLE001 - reported; the evaluation renders it again at the end
            return VideoOutcome(job.target, time.perf_counter() - started, traceback.format_exc())
        return VideoOutcome(job.target, time.perf_counter() - started)

    def render(self, job: VideoJob) -> None:
        s = job.settings
        meta, subtraces = load_trace(job.trace)
        env = self.chain_env(meta)
        drawer = FrameDrawer(env.description.camera_sizes.get("static", DEFAULT_SPECS["static"].size), s.scale,
                             view=getattr(getattr(env, "cameras", None), "static_view", None))
        job.target.parent.mkdir(parents=True, exist_ok=True)
        try:
            write_video(job.target, _frames(env, drawer, meta, subtraces, s.ep_len, s.stride), s.fps, s.fmt)
        except Exception as e:  # noqa: BLE001 - no working ffmpeg: a GIF is still a video
            if s.fmt != "mp4":
                raise
            warnings.warn(f"writing {job.target}.mp4 failed ({e}); writing a GIF instead")
            write_video(job.target, _frames(env, drawer, meta, subtraces, s.ep_len, s.stride), s.fps, "gif")

    def close(self) -> None:
        if self.env is not None:
            self.env.close()
            self.env = None


def visual_only(perturb: Perturbations) -> Perturbations:
    """The visual axes of `perturb` and the scene's looks (distractors, block colours): what the picture shows;
    the others are in the recorded states already."""
    return Perturbations(**{axis: level for axis, level in perturb.active().items()
                            if AXES[axis].group == "visual" or axis in SCENE_LOOK_AXES})


def render_process_main(conn: Connection, env_cfg: EnvConfig) -> None:
    """The worker pool's render process: no agent, one rendering env (built with the first video);
    answers each VideoJob with ("video", VideoOutcome) until it gets None or the parent is gone."""
    end_with_parent()  # also mid-video
    renderer = VideoRenderer(env_cfg)
    try:
        while (video := conn.recv()) is not None:
            conn.send(("video", renderer.try_render(video)))
    except (EOFError, BrokenPipeError, KeyboardInterrupt):
        pass  # the parent is gone or interrupted
    finally:
        renderer.close()


class VideoQueue:
    """Videos waiting for a free worker, and what the workers reported back."""

    def __init__(self) -> None:
        self.pending: deque[VideoJob] = deque()
        self.rendered: list[VideoOutcome] = []

    def finished(self, outcome: VideoOutcome) -> None:
        if outcome.error is not None:
            warnings.warn(f"a worker failed to render {outcome.target} (it is rendered again at the end):\n{outcome.error}")
        else:
            self.rendered.append(outcome)


def render_videos(traces: Sequence[TraceFile], video_dir: Path, env_cfg: EnvConfig, settings: VideoSettings) -> list[Path]:
    """Render, here and one after another, the videos that do not exist yet; returns every selected video's path."""
    video_dir.mkdir(parents=True, exist_ok=True)
    for stale in video_dir.glob(".*.partial.*"):  # a run killed while writing one
        stale.unlink(missing_ok=True)
    todo = video_jobs(traces, video_dir, settings)
    if todo:
        renderer = VideoRenderer(env_cfg)
        try:
            for job in todo:
                renderer.render(job)
        finally:
            renderer.close()
    return sorted(p for tf in traces for p in video_dir.glob(f"{tf.video_name}.*"))
