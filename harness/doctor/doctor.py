"""The pre-flight doctor: a checkpoint, its data and the evaluation's env checked against each other before a
long run (docs/DOCTOR.md). Every check is one line, PASS / WARN / FAIL / SKIP, with what to do.

    report = run_doctor(DoctorConfig(checkpoint="runs/train/x/checkpoints/last", data="data/demo_D"))
    print(report.render()); sys.exit(report.exit_code)

The model against the env: cameras and image sizes, the action it produces, CALVIN's evaluation
instructions through its tokenizer, ep_len. The model against the data: its normaliser against the
recorded actions and statistics.yaml, its predictions on recorded windows (out of range, scale, gripper
sign). The data against the env: robot_obs against the env's forward kinematics (Euler vs axis-angle), the
synchronisation check (harness/data/sync.py), an open-loop replay of recorded actions.
"""

from __future__ import annotations

from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
from harness.doctor.model_checks import instruction_check, normaliser_check, predict_windows, prediction_checks
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
    episodes: int = 8  # episode stretches read for the normaliser, sync and robot_obs checks
    replay_episodes: int = 2
    replay_steps: int = 64
    device: str = "cpu"
    dtype: str = "auto"

    def __post_init__(self) -> None:
        if self.env not in ENV_BACKENDS:
            raise ValueError(f"env must be one of {', '.join(ENV_BACKENDS)}, got {self.env!r}")
        for name in ("ep_len", "windows", "episodes", "replay_episodes", "replay_steps"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass
class DataView:
    """The dataset as the doctor reads it: the training split (the one the checkpoint learnt from, where its
    conventions show most clearly) and episode stretches of it."""

    root: Path
    train: FrameSource
    stretches: list[Stretch]
    statistics: dict[str, Any] | None
    statistics_where: str


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


def open_data(root: Path, data_cfg: dict[str, Any], episodes: int) -> DataView:
    train_name = _split(root, data_cfg.get("train_split", "training"), "training")
    if train_name is None:
        raise ValueError(f"{root}: no training/ or validation/ split")
    train = open_frames(root, train_name)
    stretches = [read_stretch(train, *b) for b in spread(stretch_bounds(train), episodes)]
    stats_path = Path(train.name) / STATISTICS
    statistics = None
    if stats_path.is_file():
        try:
            statistics = read_statistics(stats_path)
        except CalvinFormatError:
            statistics = None  # `python -m harness.data check` names the problem
    return DataView(root, train, stretches, statistics, str(stats_path))


def _image_shapes(source: FrameSource, cameras: tuple[str, ...]) -> dict[str, tuple[int, ...]]:
    first = int(source.runs[0, 0])
    keys = [f"rgb_{c}" for c in cameras]
    return {k: tuple(v.shape[1:]) for k, v in source.read({k: (first, first + 1) for k in keys}).items()}


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
    checks += prediction_checks(ckpt.normalizer, predict_windows(ckpt.model, ckpt.normalizer, view.train, cfg.windows))
    if states is None:
        return checks + [Check(n, "skip", "no env (--env none)") for n in ("robot_obs", "sync: actions", "sync: language", "replay")]
    checks.append(robot_obs_check(states, view.stretches))
    checks += _sync_checks(sync_report(view.train, view.stretches, states))
    checks.append(replay_check(states, spread(view.stretches, cfg.replay_episodes), cfg.replay_steps))
    return checks


def _env_checks(cfg: DoctorConfig, agent: VLAAgent, expected: dict[str, tuple[int, ...]], expected_from: str) -> list[Check]:
    env_cfg = EnvConfig(backend=cfg.env, scene=cfg.scene, renderer=cfg.renderer, options=dict(cfg.env_options),
                        factory=cfg.env_factory)
    name = f"env={cfg.env_factory or cfg.env} scene {cfg.scene}"
    try:
        env = env_cfg.build(cameras=agent.spec.cameras)
    except Exception as e:  # noqa: BLE001 - the evaluation would stop here with the same error
        return [Check("cameras", "fail", f"{name} cannot be built: {type(e).__name__}: {e}", "fix the env settings")]
    with closing(env):
        condition, tasks = eval_chains(1)[0]
        obs = env.reset(*initial_state(condition, cfg.scene))
        return [camera_check(agent.spec.cameras, expected, expected_from, obs, name),
                action_form_check(agent, obs, eval_instruction(tasks[0]), name)]


def run_doctor(cfg: DoctorConfig) -> DoctorReport:
    report = DoctorReport(f"{cfg.checkpoint}" + (f", data {cfg.data}" if cfg.data else "") + f", env={cfg.env}")
    try:
        import torch

        device = torch.device(cfg.device)
        ckpt = load_checkpoint(cfg.checkpoint, device=device, dtype=resolve_dtype(cfg.dtype, device))
    except (ValueError, OSError) as e:
        report.add(Check("checkpoint", "fail", str(e), "point at a checkpoint folder written by the trainer"))
        return report
    mcfg = ckpt.model.cfg
    report.add(Check("checkpoint", "pass", f"{mcfg.backbone.pretrained or mcfg.backbone.tiny} ({mcfg.backbone.family}), "
                                           f"{mcfg.head.type} head, window {mcfg.window_size}, chunk {mcfg.fwd_pred_next_n}, "
                                           f"cameras {'+'.join(mcfg.cameras)}, proprio {'on' if mcfg.use_proprio else 'off'}"))
    root, root_from = _data_root(cfg, ckpt)
    view = open_data(root, ckpt.config.get("data") or {}, cfg.episodes) if root is not None else None
    if view is not None:
        report.subject = f"{cfg.checkpoint}, data {root} ({root_from}), env={cfg.env}"
        training_lang = view.train.lang
        expected, expected_from = _image_shapes(view.train, mcfg.cameras), "as in its data"
        segments = np.concatenate([
            np.diff(open_frames(root, s).lang.indx, axis=1)[:, 0] + 1 for s in SPLITS if (root / s).is_dir()])
    else:
        training_lang, segments = None, None
        expected = {f"rgb_{c}": CALVIN_IMAGE_SHAPES[f"rgb_{c}"] for c in mcfg.cameras}
        expected_from = "CALVIN's sizes: no dataset"
    report.add(instruction_check(ckpt.model, training_lang), ep_len_check(cfg.ep_len, segments))
    agent = VLAAgent(ckpt.model, ckpt.normalizer, checkpoint=str(cfg.checkpoint))
    if cfg.env == "none":
        report.add(*(Check(n, "skip", "no env (--env none)") for n in ("cameras", "action form")))
    else:
        report.add(*_env_checks(cfg, agent, expected, expected_from))
    names = ("normaliser", "predictions", "gripper", "robot_obs", "sync: actions", "sync: language", "replay")
    if view is None:
        report.add(*(Check(n, "skip", root_from) for n in names))
        return report
    states = RecordedStates(cfg.env, cfg.env_options) if cfg.env != "none" else None
    try:
        report.add(*_data_checks(cfg, ckpt, view, states))
    finally:
        if states is not None:
            states.close()
    return report
