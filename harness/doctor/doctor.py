"""The pre-flight doctor: a checkpoint, its data and the evaluation's env checked against each other before a
long run (docs/DOCTOR.md). Every check is one line, PASS / WARN / FAIL / SKIP, with what to do.

    report = run_doctor(DoctorConfig(checkpoint="runs/train/x/checkpoints/last", data="data/demo_D"))
    print(report.render()); sys.exit(report.exit_code)

The model against the env: cameras and image sizes, the action it produces, CALVIN's evaluation
instructions through its tokenizer, ep_len. The model against the data: its normaliser against the
recorded actions and statistics.yaml, its predictions on recorded windows (out of range, scale, gripper
sign), its scene-state probe on held-out frames. The data against the env: robot_obs against the env's
forward kinematics (Euler vs axis-angle), the synchronisation check (harness/data/sync.py), an open-loop
replay of recorded actions.
"""

from __future__ import annotations

from contextlib import closing
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from agents.vla.agent import VLAAgent, resolve_dtype
from agents.vla.checkpoint import Checkpoint, load_checkpoint
from harness.data.calvin_format import CALVIN_IMAGE_SHAPES, SPLITS, STATISTICS, CalvinFormatError, read_statistics
from harness.data.sync import RecordedStates, Stretch, SyncReport, open_frames, read_stretch, spread, stretch_bounds, sync_report
from harness.data.windows import FrameSource
from harness.doctor.env_checks import (
    CALVIN_EP_LEN,
    action_form_check,
    camera_check,
    ep_len_check,
    replay_check,
    robot_obs_check,
)
from harness.doctor.model_checks import (
    gripper_switch_check,
    image_check,
    instruction_check,
    normaliser_check,
    predict_gripper_switches,
    predict_image_swaps,
    predict_segment_starts,
    predict_scene_state,
    predict_windows,
    prediction_checks,
    scene_state_check,
    segment_start_check,
)
from harness.doctor.report import Check, DoctorReport, judged
from harness.eval.specs import EnvConfig
from harness.tasks import eval_chains, eval_instruction, initial_state

ENV_BACKENDS = ("builtin", "calvin", "none")


@dataclass(frozen=True)
class DoctorConfig:
    checkpoint: str
    data: str | None = None  # dataset root; default: the checkpoint's training data (config.yaml data.path)
    env: str = "builtin"  # builtin | calvin | none (no env checks)
    scene: str = "D"
    renderer: str = "tiny"
    env_options: dict[str, Any] = field(default_factory=dict)  # as the evaluation's env.options
    env_factory: str | None = None  # "module:callable", as the evaluation's env.factory
    ep_len: int = CALVIN_EP_LEN
    windows: int = 16  # recorded windows the model predicts on
    episodes: int = 8  # episode stretches read for the normaliser, sync and robot_obs checks ...
    episode_frames: int = 1000  # ... at most this many frames of each (CALVIN's recorded episodes are long)
    replay_episodes: int = 2
    replay_steps: int = 64
    device: str = "cpu"
    dtype: str = "auto"

    def __post_init__(self) -> None:
        if self.env not in ENV_BACKENDS:
            raise ValueError(f"env must be one of {', '.join(ENV_BACKENDS)}, got {self.env!r}")
        for name in ("ep_len", "windows", "episodes", "episode_frames", "replay_episodes", "replay_steps"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.env == "none":
            if self.env_factory is not None:
                raise ValueError(f"--env none skips every env check: --env-factory {self.env_factory} would be ignored")
        else:  # a bad scene is said now, not as a traceback after the checkpoint and the data were read
            EnvConfig(backend=self.env, scene=self.scene, renderer=self.renderer, factory=self.env_factory)


@dataclass
class DataView:
    """The dataset as the doctor reads it: the training split (the one the checkpoint learnt from, where its
    conventions show most clearly), episode stretches of it, and the held-out split where there is one."""

    root: Path
    train: FrameSource
    stretches: list[Stretch]
    statistics: dict[str, Any] | None
    statistics_where: str
    held_out: FrameSource | None = None


def _data_root(cfg: DoctorConfig, ckpt: Checkpoint) -> tuple[Path | None, str]:
    if cfg.data is not None:
        return Path(cfg.data), "--data"
    trained_on = (ckpt.config.get("data") or {}).get("path")
    if trained_on and Path(trained_on).exists():
        return Path(trained_on), "the checkpoint's training data (config.yaml data.path)"
    return None, f"no dataset: pass --data (the checkpoint's data.path {trained_on!r} is not on this machine)"


def _split(root: Path, preferred: str, fallback: str) -> str | None:
    for name in (preferred, fallback, *SPLITS):
        if (root / name).is_dir():
            return name
    return None


def open_data(root: Path, data_cfg: dict[str, Any], episodes: int, episode_frames: int) -> DataView:
    train_name = _split(root, data_cfg.get("train_split", "training"), "training")
    if train_name is None:
        raise ValueError(f"{root}: no training/ or validation/ split")
    train = open_frames(root, train_name)
    stretches = [read_stretch(train, *b, max_frames=episode_frames) for b in spread(stretch_bounds(train), episodes)]
    stats_path = Path(train.name) / STATISTICS
    statistics = None
    if stats_path.is_file():
        try:
            statistics = read_statistics(stats_path)
        except CalvinFormatError:
            statistics = None  # `python -m harness.data check` names the problem
    held_name = data_cfg.get("val_split", "validation")
    held_out = open_frames(root, held_name) if held_name != train_name and (root / held_name).is_dir() else None
    return DataView(root, train, stretches, statistics, str(stats_path), held_out)


def _image_shapes(source: FrameSource, cameras: tuple[str, ...]) -> dict[str, tuple[int, ...]]:
    """The sizes of the model's cameras in the data (those the data holds): as recorded, for shards that
    store them at the model's input size (`convert --resize`: the model resizes rendered frames the same way)."""
    first = int(source.runs[0, 0])
    resized = (getattr(source, "manifest", None) or {}).get("resized") or {}
    shapes = {}
    for key in (f"rgb_{c}" for c in cameras):
        if key in resized:
            shapes[key] = tuple(resized[key]["from"])
            continue
        try:
            shapes[key] = tuple(source.read({key: (first, first + 1)})[key].shape[1:])
        except (KeyError, CalvinFormatError):
            pass  # a converted copy without the camera: the predictions line says so
    return shapes


def _guarded(names: tuple[str, ...], checks: Callable[[], list[Check]]) -> list[Check]:
    """The checks, or one FAIL line for the first of `names` (and SKIP for the rest) when they cannot run:
    whatever stops them would stop the evaluation or the training too."""
    try:
        return checks()
    except Exception as e:  # noqa: BLE001 - reported as a finding, with its type
        return [Check(names[0], "fail", f"cannot run: {type(e).__name__}: {' '.join(str(e).split())}",
                      "fix what the message names"), *(Check(n, "skip", f"after the {names[0]} failure") for n in names[1:])]


def _sync_checks(report: SyncReport) -> list[Check]:
    action_errors = [p for p in report.errors if p.key != "lang_annotations"]
    action_warnings = [p for p in report.problems if p.severity != "error" and p.key != "lang_annotations"]
    lags = ", ".join(f"{lag:+d} in {n}" for lag, n in sorted(report.lags().items())) or "none measured"
    actions = judged(
        "sync: actions", f"{len(report.actions)} episodes: lag of the arm's motion behind rel_actions {lags} (frames); "
                         f"gripper: {report.gripper.summary()}",
        f"{action_errors[0]} (python -m harness.data check --sync for every episode)" if action_errors else "",
        str(action_warnings[0]) if action_warnings else "")
    failed = [a for a in report.annotations if a.failed]
    counts = {s: sum(a.status == s for a in report.annotations) for s in
              ("completed", "completed (simulated end)", "mislabelled", "misaligned", "not completed")}
    language = judged(
        "sync: language", f"{len(report.annotations)} annotations checked by the task oracle on recorded states: "
                          + ", ".join(f"{n} {s}" for s, n in counts.items() if n),
        (f"annotation {failed[0].index} ({failed[0].task!r}, frames {failed[0].start}..{failed[0].end}) is "
         f"{failed[0].status}: {failed[0].detail}" if failed else ""))
    if not report.annotations:
        language = Check("sync: language", "skip", "no annotation starts in the episodes read")
    return [actions, language]


def _data_checks(cfg: DoctorConfig, ckpt: Checkpoint, view: DataView, states: RecordedStates | None) -> list[Check]:
    rel = np.concatenate([st.rel_actions for st in view.stretches])
    checks = [normaliser_check(ckpt.normalizer, rel, view.statistics, view.statistics_where)]
    checks += _guarded(("predictions", "gripper"), lambda: prediction_checks(
        ckpt.normalizer, predict_windows(ckpt.model, ckpt.normalizer, view.train, cfg.windows)))
    checks += _guarded(("segment starts",), lambda: [segment_start_check(
        predict_segment_starts(ckpt.model, ckpt.normalizer, view.train, cfg.windows))])
    checks += _guarded(("images",), lambda: [image_check(
        predict_image_swaps(ckpt.model, ckpt.normalizer, view.train, cfg.windows))])
    checks.append(_scene_state(cfg, ckpt, view))
    if ckpt.model.cfg.use_proprio:
        checks += _guarded(("gripper switches",), lambda: [gripper_switch_check(
            predict_gripper_switches(ckpt.model, ckpt.normalizer, view.train, cfg.windows))])
    else:
        checks.append(Check("gripper switches", "skip", "the model takes no robot_obs (use_proprio=false)"))
    if states is None:
        return checks + [Check(n, "skip", "no env (--env none)") for n in ("robot_obs", "sync: actions", "sync: language", "replay")]
    checks += _guarded(("robot_obs",), lambda: [robot_obs_check(states, view.stretches)])
    checks += _guarded(("sync: actions", "sync: language"), lambda: _sync_checks(sync_report(view.train, view.stretches, states)))
    checks += _guarded(("replay",), lambda: [replay_check(states, spread(view.stretches, cfg.replay_episodes), cfg.replay_steps)])
    return checks


def _scene_state(cfg: DoctorConfig, ckpt: Checkpoint, view: DataView) -> Check:
    if ckpt.model.state_probe is None:
        return Check("scene state", "skip", "the model has no scene-state probe (loss.state_weight 0)")

    def check() -> list[Check]:
        seen = predict_scene_state(ckpt.model, ckpt.normalizer, view.train, cfg.windows)
        held = predict_scene_state(ckpt.model, ckpt.normalizer, view.held_out, cfg.windows) if view.held_out is not None else None
        return [scene_state_check(seen, held, Path(view.held_out.name).name if view.held_out is not None else "",
                                  ckpt.model.cfg.loss.state_from)]

    return _guarded(("scene state",), check)[0]


def _env_checks(cfg: DoctorConfig, agent: VLAAgent, expected: dict[str, tuple[int, ...]], expected_from: str) -> list[Check]:
    env_cfg = EnvConfig(backend=cfg.env, scene=cfg.scene, renderer=cfg.renderer, options=dict(cfg.env_options),
                        factory=cfg.env_factory)
    name = f"env={cfg.env_factory or cfg.env} scene {cfg.scene}"
    try:
        env = env_cfg.build(cameras=agent.spec.cameras)
    except Exception as e:  # noqa: BLE001 - the evaluation would stop here with the same error
        return [Check("cameras", "fail", f"{name} cannot be built: {type(e).__name__}: {e}", "fix the env settings")]
    with closing(env):
        def checks() -> list[Check]:  # an env failing to reset is a finding, and the data checks still run
            condition, tasks = eval_chains(1)[0]
            obs = env.reset(*initial_state(condition, cfg.scene))
            return [camera_check(agent.spec.cameras, expected, expected_from, obs, name),
                    action_form_check(agent, obs, eval_instruction(tasks[0]), name)]

        return _guarded(("cameras", "action form"), checks)


def _recorded_states(cfg: DoctorConfig) -> RecordedStates | None:
    """The env the data checks restore recorded states in: the backend's, or the factory's (as evaluated)."""
    if cfg.env == "none":
        return None
    if cfg.env_factory is None:
        return RecordedStates(cfg.env, cfg.env_options)
    factory = EnvConfig(backend=cfg.env, renderer=cfg.renderer, options=dict(cfg.env_options), factory=cfg.env_factory)
    return RecordedStates(cfg.env_factory, build=lambda scene: replace(factory, scene=scene).build(cameras=()))


def _load(cfg: DoctorConfig, report: DoctorReport) -> Checkpoint | None:
    import torch

    try:
        device = torch.device(cfg.device)
        ckpt = load_checkpoint(cfg.checkpoint, device=device, dtype=resolve_dtype(cfg.dtype, device))
    except (ValueError, OSError, RuntimeError) as e:
        report.add(Check("checkpoint", "fail", " ".join(str(e).split()), "point at a checkpoint folder written by the trainer"))
        return None
    m = ckpt.model.cfg
    report.add(Check("checkpoint", "pass", f"{m.backbone.pretrained or m.backbone.tiny} ({m.backbone.family}), {m.head.type} head, "
                                           f"window {m.window_size}, chunk {m.chunk_size}, cameras {'+'.join(m.cameras)}, "
                                           f"proprio {('on' if m.proprio_gripper else 'on without the gripper') if m.use_proprio else 'off'}, normaliser {ckpt.normalizer.mode}"))
    return ckpt


def _open_view(cfg: DoctorConfig, ckpt: Checkpoint, report: DoctorReport) -> tuple[DataView | None, str]:
    """The dataset, with a `data` line saying what was read; (None, why) when there is none to read."""
    root, root_from = _data_root(cfg, ckpt)
    if root is None:
        report.add(Check("data", "skip", root_from))
        return None, root_from
    try:
        view = open_data(root, ckpt.config.get("data") or {}, cfg.episodes, cfg.episode_frames)
        lang = view.train.lang
    except (ValueError, OSError, KeyError) as e:
        report.add(Check("data", "fail", f"{root}: {' '.join(str(e).split())}", "python -m harness.data check names every problem"))
        return None, "the dataset cannot be read"
    frames = sum(len(st.robot_obs) for st in view.stretches)
    report.add(Check("data", "pass", f"{view.train.name} ({root_from}): {len(lang)} annotations; {len(view.stretches)} "
                                     f"episodes read ({frames} frames)"))
    return view, ""


def run_doctor(cfg: DoctorConfig) -> DoctorReport:
    report = DoctorReport(f"{cfg.checkpoint}, env={cfg.env}")
    ckpt = _load(cfg, report)
    if ckpt is None:
        return report
    cameras = ckpt.model.cfg.cameras
    view, why_not = _open_view(cfg, ckpt, report)
    if view is not None:
        expected, expected_from = _image_shapes(view.train, cameras), "as recorded in its data"
        segments = np.diff(view.train.lang.indx, axis=1)[:, 0] + 1
    else:
        expected = {f"rgb_{c}": CALVIN_IMAGE_SHAPES[f"rgb_{c}"] for c in cameras}
        expected_from, segments = "CALVIN's sizes: no dataset", None
    report.add(instruction_check(ckpt.model, view.train.lang if view is not None else None), ep_len_check(cfg.ep_len, segments))
    agent = VLAAgent(ckpt.model, ckpt.normalizer, checkpoint=str(cfg.checkpoint))
    if cfg.env == "none":
        report.add(*(Check(n, "skip", "no env (--env none)") for n in ("cameras", "action form")))
    else:
        report.add(*_env_checks(cfg, agent, expected, expected_from))
    if view is None:
        names = ("normaliser", "predictions", "gripper", "segment starts", "images", "scene state", "gripper switches", "robot_obs",
                 "sync: actions", "sync: language", "replay")
        report.add(*(Check(n, "skip", why_not) for n in names))
        return report
    states = _recorded_states(cfg)
    try:
        report.add(*_data_checks(cfg, ckpt, view, states))
    finally:
        if states is not None:
            states.close()
    return report
