"""Synchronisation of a dataset's actions, observations and language (`python -m harness.data check --sync`).

A dataset can pass every format check and still teach the wrong thing: actions one frame off their
observations, gripper values of the other sign, instructions on the wrong segment. This module reads the
data against the physics and the task oracle (docs/DOCTOR.md).

Actions <-> observations, for every stretch of consecutive stored frames of an episode:
  * motion: `rel_actions[t]` against the TCP's motion from `robot_obs[t]` to `robot_obs[t+1]`, in action
    units (0.02 m and 0.05 rad per unit, docs/ARCHITECTURE.md). The lag is where the correlation of the two
    signals' first differences peaks over lags -3..3. Differencing matters: actions are smooth, so the raw
    signals correlate almost as well one frame later; their changes correlate at one lag only. Lag L means
    that `rel_actions[t]` moves the arm between frames t+L and t+L+1: anything but 0 is a shifted copy.
    An action axis whose motion correlates negatively moves the arm the other way (a frame or sign error).
  * absolute targets: `rel_actions[t]` against CALVIN's relative action from `actions[t]` and `robot_obs[t]`
    (x50 m, x20 rad, clipped to [-1, 1]: `calvin_format.rel_actions_from_absolute`). The arm lags its
    target, so this agrees only to a few hundredths per unit on the project's recordings.
  * gripper: `robot_obs[t+1][14]` repeats `rel_actions[t][6]` (the env reports the last gripper action),
    and +1 opens: the opening width `robot_obs[6]` grows after +1 and shrinks after -1.

Language <-> state: for each annotation (task, start, end), the task oracle must find the task completed
from the state of frame `start` to the state of a later frame up to `end + 1` (the state the annotation's
last action leads to; CALVIN's own annotations end on the completed state, the recorder's one frame
before it). The oracle reads `get_info()` dicts, with contacts, which a dataset does not store: each state
is restored in a built-in env (`reset(robot_obs, scene_obs)` with the poses kept exactly: collision
detection, no physics step) and its `get_info()` read. Contacts are therefore recomputed from the poses,
and blocks are at rest (stack_block and unstack_block require that; a dataset holds no velocities). Where `end + 1` is not stored (the last
annotation of a recorded episode), the last actions are replayed from two frames before the end and
the arm held at its last target for a few steps: such annotations are reported as simulated.
An annotation that fails is reported as mislabelled (other tasks were completed instead), misaligned
(the task completes when the window is widened), or not completed.
"""

from __future__ import annotations

from collections import Counter
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
from tqdm import tqdm

from harness.data.calvin_format import (
    CalvinFormatError,
    CalvinSplit,
    LangAnnotations,
    Problem,
    rel_actions_from_absolute,
    scene_of_frame,
)
from harness.data.shards import ShardFrameSource, is_shard_dir
from harness.data.windows import FrameSource, NpzFrameSource
from harness.sim.layout import REL_ORN_SCALE, REL_POS_SCALE
from harness.spatial import wrap_angle
from harness.tasks import TaskOracle

LAGS = tuple(range(-3, 4))
MOVING = 0.05  # |relative arm action| above this counts as a commanded motion
MIN_MOVING_FRAMES = 10  # fewer commanded motions than this: too little to estimate a lag from
REVERSED_AXIS_CORR = -0.3  # an axis whose action and motion correlate below this moves the arm the other way
MIN_AXIS_MOVING_FRAMES = 10
TARGET_TOLERANCE = 0.1  # median |rel_actions - relative action from actions and robot_obs|, per unit
GRIPPER_ECHO_MIN = 0.95  # share of frames where robot_obs[t+1][14] repeats rel_actions[t][6]
GRIPPER_RESPONSE_STEPS = 3  # the width change is read this many frames after a gripper command changes
GRIPPER_MIN_CHANGE = 0.002  # m of width change that counts as opening/closing
SETTLE_STEPS = 5  # simulated end: steps the arm is held at its last target after the replayed actions
REPLAY_BACK = 2  # simulated end: the replay starts this many frames before the annotation's end
MAX_WIDENING = 64  # misaligned: how far (frames) a failing window is widened on each side
STATE_KEYS = ("rel_actions", "actions", "robot_obs", "scene_obs")
ARM_AXES = ("x", "y", "z", "roll", "pitch", "yaw")


# ------------------------------------------------------------------------------------------ reading


@dataclass
class Stretch:
    """Consecutive stored frames of one episode, their vectors as float64 arrays (T, dim)."""

    episode: int
    first: int  # frame id of row 0
    scene: str  # "A".."D"
    rel_actions: np.ndarray
    robot_obs: np.ndarray
    scene_obs: np.ndarray
    actions: np.ndarray | None  # absent when a converted copy did not keep it
    stored_last: int = -1  # the last stored frame of the stretch this was read from (-1: this one's last)

    def __post_init__(self) -> None:
        self.stored_last = max(self.stored_last, self.last)

    @property
    def last(self) -> int:
        return self.first + len(self.robot_obs) - 1

    def row(self, frame_id: int) -> int:
        return int(frame_id) - self.first


def open_frames(path: str | Path, split: str | None = None) -> FrameSource:
    """A split of CALVIN npz files or of converted shards, whichever `path` holds."""
    p = Path(path)
    if is_shard_dir(p) or (split is not None and is_shard_dir(p / split)):
        return ShardFrameSource(p, split)
    return NpzFrameSource(p, split)


def _episodes(source: FrameSource) -> np.ndarray:
    if isinstance(source, ShardFrameSource):
        return np.asarray(source.manifest.get("episodes") or source.runs, dtype=np.int64).reshape(-1, 2)
    split: CalvinSplit = source.split  # type: ignore[attr-defined]
    return split.episodes


def stretch_bounds(source: FrameSource) -> list[tuple[int, int, int, str]]:
    """(episode, first, last, scene) of every stretch of consecutive stored frames within an episode."""
    eps, scene_info = _episodes(source), source.scene_info
    runs = source.runs  # sorted, disjoint
    out = []
    for k, (s, e) in enumerate(eps):
        first_run = int(np.searchsorted(runs[:, 1], s))  # the first run that ends at or after s
        for rs, re in runs[first_run : int(np.searchsorted(runs[:, 0], e, side="right"))]:
            a, b = max(int(s), int(rs)), min(int(e), int(re))
            if a <= b:
                out.append((k, a, b, scene_of_frame(a, scene_info)))
    return sorted(out, key=lambda item: item[1])


def read_stretch(source: FrameSource, episode: int, first: int, last: int, scene: str,
                 max_frames: int | None = None) -> Stretch:
    """The vectors of frames first..last (only the first `max_frames` of them when that is given)."""
    keys = [k for k in STATE_KEYS if not isinstance(source, ShardFrameSource) or k in source.keys]
    missing = {"rel_actions", "robot_obs", "scene_obs"} - set(keys)
    if missing:
        raise ValueError(f"{source.name}: the sync check needs {sorted(missing)}, which this copy does not hold")
    stop = last + 1 if max_frames is None else min(last + 1, first + max_frames)
    vec = {k: np.asarray(v, dtype=np.float64) for k, v in source.read({k: (first, stop) for k in keys}).items()}
    _check_lights(source, first, vec["scene_obs"])
    return Stretch(episode, first, scene, vec["rel_actions"], vec["robot_obs"], vec["scene_obs"], vec.get("actions"),
                   stored_last=last)


def _check_lights(source: FrameSource, first: int, scene_obs: np.ndarray) -> None:
    """Lightbulb and LED (scene_obs[4], [5]) are 0 or 1: an env refuses to restore another value (calvin_env's
    Light.reset raises), so such a stretch is reported, naming its first such frame, instead of stopping the check."""
    bad = np.flatnonzero(~np.isin(scene_obs[:, 4:6], (0.0, 1.0)).all(axis=1))
    if len(bad):
        frame = first + int(bad[0])
        raise CalvinFormatError([Problem(
            f"{source.name}, frame {frame}", f"lightbulb and led (scene_obs[4:6]) are "
            f"{', '.join(f'{v:.6g}' for v in scene_obs[bad[0], 4:6])}: "
            f"a light is 0 or 1 ({len(bad)} such frames from {frame}); its episode's states cannot be restored",
            "scene_obs")])


def spread(items: list[Any], limit: int | None) -> list[Any]:
    """`limit` items evenly spread over the list (all of them when limit is None)."""
    if limit is None or limit >= len(items):
        return list(items)
    return [items[int(i)] for i in np.linspace(0, len(items) - 1, limit).round().astype(int)]


# ------------------------------------------------------------------------------------------ actions


def arm_motion(robot_obs: np.ndarray) -> np.ndarray:
    """(T-1, 6) TCP motion between consecutive frames in relative-action units (0.02 m, 0.05 rad)."""
    d = np.diff(robot_obs[:, :6], axis=0)
    d[:, 3:] = wrap_angle(d[:, 3:])
    return d / np.array([REL_POS_SCALE] * 3 + [REL_ORN_SCALE] * 3)


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel(), b.ravel()
    if len(a) < 3 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def lag_profile(rel_actions: np.ndarray, motion: np.ndarray) -> dict[int, float]:
    """lag L -> correlation of the first differences of rel_actions[t] (arm) and motion[t + L]."""
    n = len(motion)
    out = {}
    for lag in LAGS:
        t = np.arange(max(0, -lag), min(n, n - lag))
        out[lag] = _corr(np.diff(rel_actions[t, :6], axis=0), np.diff(motion[t + lag], axis=0))
    return out


@dataclass
class ActionSync:
    """How one stretch's actions line up with its observations."""

    episode: int
    first: int
    last: int
    lag: int | None  # None: too little commanded motion to tell
    profile: dict[int, float]  # lag -> correlation of action and motion changes
    reversed_axes: tuple[str, ...]  # axes whose motion goes against the action
    target_error: float | None  # median |rel_actions - relative action from actions, robot_obs|
    gripper_echo: float | None  # share of robot_obs[t+1][14] == rel_actions[t][6]; None without changes

    @property
    def where(self) -> str:
        return f"episode {self.episode} (frames {self.first}..{self.last})"


def action_sync(st: Stretch) -> ActionSync:
    rel, obs = st.rel_actions, st.robot_obs
    motion = arm_motion(obs)
    moving = np.abs(rel[:-1, :6]).max(axis=1) > MOVING
    lag, profile, reversed_axes = None, {}, ()
    if moving.sum() >= MIN_MOVING_FRAMES:
        profile = lag_profile(rel, motion)
        finite = {k: v for k, v in profile.items() if np.isfinite(v)}
        lag = max(finite, key=finite.get) if finite else None
        reversed_axes = tuple(
            ARM_AXES[d] for d in range(6)
            if (np.abs(rel[:-1, d]) > MOVING).sum() >= MIN_AXIS_MOVING_FRAMES and _corr(rel[:-1, d], motion[:, d]) < REVERSED_AXIS_CORR
        )
    target_error = None
    if st.actions is not None:
        target = rel_actions_from_absolute(st.actions, obs.astype(np.float32))
        target_error = float(np.median(np.abs(target[:, :6] - rel[:, :6])))
    grip = rel[:, 6]
    echo = float(np.mean(obs[1:, 14] == grip[:-1])) if np.any(grip[1:] != grip[:-1]) else None
    return ActionSync(st.episode, st.first, st.last, lag, profile, reversed_axes, target_error, echo)


@dataclass
class GripperResponse:
    """How the opening width responds to changes of the gripper command, pooled over stretches."""

    to_open: int = 0  # commands changing to +1 ...
    opened: int = 0  # ... after which the width grew
    closed_after_open: int = 0  # ... after which it shrank
    to_close: int = 0
    closed: int = 0
    opened_after_close: int = 0

    def add(self, st: Stretch) -> None:
        grip, width = st.rel_actions[:, 6], st.robot_obs[:, 6]
        for t in np.flatnonzero(grip[1:] != grip[:-1]) + 1:
            after = min(t + GRIPPER_RESPONSE_STEPS, len(width) - 1)
            change = width[after] - width[t]
            if grip[t] > 0:
                self.to_open += 1
                self.opened += change > GRIPPER_MIN_CHANGE
                self.closed_after_open += change < -GRIPPER_MIN_CHANGE
            else:
                self.to_close += 1
                self.closed += change < -GRIPPER_MIN_CHANGE
                self.opened_after_close += change > GRIPPER_MIN_CHANGE

    @property
    def flipped(self) -> bool:
        """The width mostly moves against the command: +1 closes in this data."""
        against = self.closed_after_open + self.opened_after_close
        along = self.opened + self.closed
        return against > along

    def summary(self) -> str:
        if not (self.to_open or self.to_close):
            return "no gripper command changes"
        return (f"+1 (open) {self.to_open} times: the width grew {self.opened}, shrank {self.closed_after_open}; "
                f"-1 (close) {self.to_close} times: shrank {self.closed}, grew {self.opened_after_close} "
                f"(within {GRIPPER_RESPONSE_STEPS} frames)")


# ------------------------------------------------------------------------------------------ language


class RecordedStates:
    """`get_info()` of recorded states: a cameraless env per scene, reset to each state asked for."""

    def __init__(self, backend: str = "builtin", env_options: dict[str, Any] | None = None,
                 build: Callable[[str], Any] | None = None):
        """`build(scene)`: a cameraless env of another kind (the doctor's --env-factory); `backend` names it."""
        self.backend = backend
        self.env_options = dict(env_options or {})
        self.build = build
        self._envs: dict[str, Any] = {}
        self.oracle = TaskOracle()

    def env(self, scene: str) -> Any:
        if scene not in self._envs and self.build is not None:
            self._envs[scene] = self.build(scene)
        if scene not in self._envs:
            from harness.envs import make_env

            exact = {"step_after_reset": False} if self.backend == "builtin" else {}  # the recorded poses, unsettled
            self._envs[scene] = make_env(self.backend, **{**exact, **self.env_options, "scene": scene, "cameras": ()})
        return self._envs[scene]

    def info(self, st: Stretch, frame_id: int) -> dict[str, Any]:
        env = self.env(st.scene)
        r = st.row(frame_id)
        env.reset(st.robot_obs[r], st.scene_obs[r])
        return env.get_info()

    def simulated_ends(self, st: Stretch, end: int) -> Iterator[dict[str, Any]]:
        """Infos after replaying the actions of frames end-REPLAY_BACK..end from the state of the first of
        them, then after each of SETTLE_STEPS steps holding the last target (the state after `end` is not stored)."""
        env = self.env(st.scene)
        first = max(end - REPLAY_BACK, st.first)
        env.reset(st.robot_obs[st.row(first)], st.scene_obs[st.row(first)])
        for t in [*range(first, end + 1), *[end] * SETTLE_STEPS]:
            _, _, _, info = env.step(_recorded_action(st, t))
            if t >= end:
                yield info

    def close(self) -> None:
        for env in self._envs.values():
            env.close()
        self._envs.clear()


def _recorded_action(st: Stretch, frame_id: int) -> Any:
    """The recorded action of a frame as the env takes it: the absolute target where stored (it is
    exactly what the recording's relative actions had set), else the relative action."""
    r = st.row(frame_id)
    if st.actions is not None:
        a = st.actions[r]
        return (a[:3], a[3:6], 1.0 if a[6] > 0 else -1.0)
    return st.rel_actions[r]


ANNOTATION_STATUSES = ("completed", "completed (simulated end)", "mislabelled", "misaligned", "not completed")
FAILED_STATUSES = ("mislabelled", "misaligned", "not completed")


@dataclass
class AnnotationSync:
    index: int
    task: str
    start: int
    end: int
    status: str
    detail: str = ""

    @property
    def failed(self) -> bool:
        return self.status in FAILED_STATUSES


def annotation_sync(states: RecordedStates, st: Stretch, index: int, task: str, start: int, end: int) -> AnnotationSync:
    oracle = states.oracle
    start_info = states.info(st, start)

    def done(info: dict[str, Any]) -> bool:
        return oracle.is_completed(task, start_info, info)

    result = AnnotationSync(index, task, start, end, "completed")
    stored_end = min(end + 1, st.last)
    candidates = [stored_end, *range(stored_end - 1, start, -1)]  # the end first: where it usually completes
    end_info = None
    for t in candidates:
        info = states.info(st, t)
        end_info = end_info or info
        if done(info):
            return result
    if stored_end == end:  # the state after the last action is not stored
        for info in states.simulated_ends(st, end):
            end_info = info
            if done(info):
                result.status = "completed (simulated end)"
                return result
    others = sorted(oracle.completed(start_info, end_info) - {task}) if end_info is not None else []
    if others:
        result.status, result.detail = "mislabelled", f"the frames complete {', '.join(others)} instead"
        return result
    shift = _widened(states, st, task, start, end)
    if shift:
        result.status, result.detail = "misaligned", shift
    else:
        result.status, result.detail = "not completed", "no task is completed between its start and end"
    return result


def _widened(states: RecordedStates, st: Stretch, task: str, start: int, end: int) -> str:
    """Where the task completes when the window is widened (later ends, then earlier starts); '' if nowhere."""
    oracle = states.oracle
    start_info = states.info(st, start)
    for t in range(end + 2, min(end + 1 + MAX_WIDENING, st.last) + 1):
        if oracle.is_completed(task, start_info, states.info(st, t)):
            return f"completed only at frame {t}, {t - end - 1} frames after the state its last action leads to"
    if end + 1 + MAX_WIDENING > st.last and any(oracle.is_completed(task, start_info, info) for info in states.simulated_ends(st, st.last)):
        return (f"completed only after the stretch's last frame {st.last} (simulated), {st.last - end} frames after "
                "the state its last action leads to")
    end_info = states.info(st, min(end + 1, st.last))
    for s in range(start - 1, max(start - MAX_WIDENING, st.first) - 1, -1):
        if oracle.is_completed(task, states.info(st, s), end_info):
            return f"completed only from frame {s}, {start - s} frames before its start"
    return ""


# ------------------------------------------------------------------------------------------ the report


@dataclass
class SyncReport:
    path: str
    env: str  # what restored the states, for the printout
    actions: list[ActionSync] = field(default_factory=list)
    gripper: GripperResponse = field(default_factory=GripperResponse)
    annotations: list[AnnotationSync] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    def lags(self) -> Counter:
        return Counter(a.lag for a in self.actions if a.lag is not None)

    def judge(self) -> None:
        """Turn the measurements into problems (errors fail the check)."""
        for a in self.actions:
            if a.lag not in (None, 0):
                self.problems.append(Problem(a.where, f"actions are shifted by {a.lag:+d} frames against the observations: "
                                                      f"rel_actions[t] moves the arm between frames t{a.lag:+d} and t{a.lag + 1:+d}", "rel_actions"))
            if a.reversed_axes:
                self.problems.append(Problem(a.where, f"the arm moves against the action on {', '.join(a.reversed_axes)}: "
                                                      "relative actions in another frame or of the other sign", "rel_actions"))
            if a.target_error is not None and a.target_error > TARGET_TOLERANCE:
                self.problems.append(Problem(a.where, f"rel_actions differ from CALVIN's relative action of actions - robot_obs by "
                                                      f"{a.target_error:.3f} per unit (median; tolerance {TARGET_TOLERANCE})",
                                             "actions", "warning"))
        out_of_step = [a for a in self.actions if a.gripper_echo is not None and a.gripper_echo < GRIPPER_ECHO_MIN]
        if out_of_step:
            worst = min(out_of_step, key=lambda a: a.gripper_echo)
            self.problems.append(Problem(self.path, f"robot_obs[t+1][14] does not repeat rel_actions[t][6] (the env's last gripper "
                                                    f"action) in {len(out_of_step)} episode stretches; worst: {worst.where}, "
                                                    f"{worst.gripper_echo:.0%} of frames", "robot_obs", "warning"))
        if self.gripper.flipped:
            self.problems.append(Problem(self.path, f"the gripper command has the other sign: {self.gripper.summary()}; "
                                                    "CALVIN's +1 opens", "rel_actions"))
        for a in self.annotations:
            if a.failed:
                self.problems.append(Problem(self.path, f"annotation {a.index} ({a.task!r}, frames {a.start}..{a.end}) "
                                                        f"is {a.status}: {a.detail}", "lang_annotations"))

    def annotation_table(self) -> list[str]:
        counts: dict[str, Counter] = {}
        for a in self.annotations:
            counts.setdefault(a.task, Counter())[a.status] += 1
        width = max([len(t) for t in counts] + [4])
        head = f"  {'task':<{width}}  " + "  ".join(f"{s:>{max(len(s), 5)}}" for s in ANNOTATION_STATUSES)
        rows = [f"  {t:<{width}}  " + "  ".join(f"{c[s]:>{max(len(s), 5)}}" for s in ANNOTATION_STATUSES)
                for t, c in sorted(counts.items())]
        return [head, *rows]

    def render(self) -> str:
        frames = sum(a.last - a.first + 1 for a in self.actions)
        lags = self.lags()
        unknown = sum(a.lag is None for a in self.actions)
        lines = [f"== sync: {self.path} ==",
                 f"actions <-> observations: {len(self.actions)} episode stretches, {frames} frames"]
        lag_text = ", ".join(f"{lag:+d} in {n}" for lag, n in sorted(lags.items())) or "none measured"
        lines.append(f"  lag L (rel_actions[t] moves the arm between frames t+L and t+L+1): {lag_text}"
                     + (f"; {unknown} with too little motion to tell" if unknown else ""))
        profiles = [a.profile for a in self.actions if a.profile]
        if profiles:
            med = [np.nanmedian([p[lag] for p in profiles]) for lag in LAGS]
            lines.append("  correlation of action and motion changes at lags " + " ".join(f"{lag:+d}" for lag in LAGS)
                         + ": " + " ".join(f"{v:+.2f}" for v in med) + " (median)")
        errs = [a.target_error for a in self.actions if a.target_error is not None]
        if errs:
            lines.append(f"  rel_actions vs CALVIN's relative action from actions - robot_obs: median |difference| "
                         f"{np.median(errs):.3f} per unit (worst stretch {max(errs):.3f})")
        echoes = [a.gripper_echo for a in self.actions if a.gripper_echo is not None]
        if echoes:
            lines.append(f"  robot_obs[t+1][14] repeats rel_actions[t][6] in at least {min(echoes):.1%} of each episode's frames")
        lines.append(f"  gripper: {self.gripper.summary()}")
        failed = sum(a.failed for a in self.annotations)
        lines.append(f"language <-> state: {len(self.annotations)} annotations, {failed} failed "
                     f"(oracle on the recorded states restored in {self.env})")
        if self.annotations:
            lines += self.annotation_table()
        lines += [f"note: {n}" for n in self.notes]
        warnings = [p for p in self.problems if p.severity != "error"]
        lines.append(f"problems: {len(self.errors)} errors, {len(warnings)} warnings")
        lines += [f"  {p.severity.upper()}: {p}" for p in self.problems]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path, "env": self.env,
            "lags": {str(k): v for k, v in sorted(self.lags().items())},
            "episodes": [{"episode": a.episode, "first": a.first, "last": a.last, "lag": a.lag,
                          "profile": {str(k): v for k, v in a.profile.items()}, "reversed_axes": list(a.reversed_axes),
                          "target_error": a.target_error, "gripper_echo": a.gripper_echo} for a in self.actions],
            "gripper": self.gripper.__dict__,
            "annotations": [a.__dict__ for a in self.annotations],
            "problems": [{"severity": p.severity, "where": p.where, "key": p.key, "message": p.message} for p in self.problems],
        }


def sync_report(source: FrameSource, stretches: Iterable[Stretch], states: RecordedStates) -> SyncReport:
    """Check the given stretches of `source` and the annotations that start in them."""
    report = SyncReport(source.name, f"env={states.backend}")
    try:
        lang = source.lang
    except CalvinFormatError as e:  # no readable annotations: the actions are still checked
        report.problems += e.problems
        lang = LangAnnotations(np.zeros((0, 2), np.int64), [], [])
    except (OSError, ValueError, KeyError) as e:  # a converted copy's annotations.json
        report.problems.append(Problem(source.lang_where, f"cannot be read ({type(e).__name__}: {e})", "lang_annotations"))
        lang = LangAnnotations(np.zeros((0, 2), np.int64), [], [])
    order = np.argsort(lang.indx[:, 0], kind="stable")
    starts = lang.indx[order, 0]
    for st in stretches:
        report.actions.append(action_sync(st))
        report.gripper.add(st)
        for k in order[np.searchsorted(starts, st.first) : np.searchsorted(starts, st.last)]:
            s, e = (int(v) for v in lang.indx[k])
            if e > st.stored_last:
                report.problems.append(Problem(source.name, f"annotation {k} ({lang.task[k]!r}, frames {s}..{e}) runs "
                                                            f"past its episode's stored frames (..{st.stored_last})", "lang_annotations"))
            elif e < st.last or st.last == st.stored_last:  # else it ends past the frames read, or its end + 1 is unread
                report.annotations.append(annotation_sync(states, st, int(k), lang.task[k], s, e))
    report.judge()
    return report


def check_sync(path: str | Path, split: str | None = None, *, episodes: int | None = None, env: str = "builtin",
               env_options: dict[str, Any] | None = None, progress: bool = False) -> SyncReport:
    """The synchronisation check of one split (npz or shards). `episodes`: check this many episode
    stretches, spread over the split (default: all); `env`: the backend that restores recorded states."""
    source = None
    try:
        source = open_frames(path, split)
        source.scene_info  # the states are restored in each frame's scene
        every = stretch_bounds(source)
    except CalvinFormatError as e:  # a refused scene label (an old task_D_D copy's), an unreadable split: the report says so
        report = SyncReport(source.name if source else str(path), f"env={env}")
        report.problems += e.problems
        return report
    bounds = spread(every, episodes)
    unread: list[Problem] = []

    def stretches() -> Iterator[Stretch]:
        for b in tqdm(bounds, desc="sync", unit="episode", disable=not progress):
            try:
                yield read_stretch(source, *b)
            except CalvinFormatError as e:  # a corrupt frame: its stretch is reported and skipped, the others checked
                unread.extend(e.problems)

    with closing(RecordedStates(env, env_options)) as states:
        report = sync_report(source, stretches(), states)
    report.problems += unread
    if len(bounds) < len(every):
        report.notes.append(f"{len(bounds)} of {len(every)} episode stretches checked")
    return report
