"""The floor a trained policy must beat: what trivial predictors of the arm action reach on a dataset.

    python -m harness.train.baselines runs/e2e_full/shards_D          # shards or CALVIN npz splits
    python -m harness.train.baselines DATA --clip 0.65                 # the normaliser's clip (clip_scale)
    python -m harness.train.baselines DATA --tasks open_drawer,close_drawer   # these tasks' frames only

Each predictor is fitted on the training split's annotated frames and scored on both splits with the arm
part of the training loss: smooth-L1 (beta 1) over the six relative arm actions, normalised as the
clip_scale normaliser does (clipped to +-clip, divided by clip). The trainer's `loss_arm` and
`val/loss_arm` average the same loss over each window's chunk of future actions; these predict each
frame's own action, whose distribution is the chunk's but for the segment ends.

    mean                     one action for every frame
    task mean                one action per task: what the instruction alone gives
    task x time              per task and 10-frame step into the segment: the instruction and a clock
    robot_obs linear         one linear function of robot_obs: proprioception without the task
    task x robot_obs linear  a linear function of robot_obs per task: instruction and proprioception, no image
    last TCP motion linear   a linear function of the TCP's pose change since the previous frame (0 at a
                             segment's first): what a policy reads from its window's robot_obs history alone

A policy whose `val/loss_arm` stays at the `mean` row has learnt nothing of the arm, whatever its loss
curve looks like (docs/TRAINING.md, "The full run, as measured so far").

A second table gives the floor of the scene-state loss (`model.loss.state_weight`, its `loss_state`): the
training frames' mean scene state, scored as that loss scores the probe. A probe at that row has learnt
nothing of where the objects are. A task or time step that the
training split lacks falls back to the coarser predictor (task x time -> task mean -> mean).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Callable

import numpy as np

from agents.vla.heads import SCENE_STATE, SCENE_STATE_SCALE
from harness.data.normalization import ActionNormalizer
from harness.data.sync import open_frames
from harness.data.windows import segment_scenes
from harness.sim.layout import get_layout
from harness.spatial import wrap_angle
from harness.tool_args import several
from harness.train.tables import markdown_table

ARM = 6
TIME_STEP = 10  # frames per step of the task x time predictor
RIDGE = 1e-3  # keeps a task's linear fit defined when its frames do not span robot_obs


@dataclass
class Frames:
    """The annotated frames of a split: robot_obs, the normalised arm actions, the task and the frame's step
    into its segment."""

    robot_obs: np.ndarray  # (N, 15)
    arm: np.ndarray  # (N, 6)
    task: np.ndarray  # (N,) str
    time: np.ndarray  # (N,) int: frames since the segment's first

    @classmethod
    def read(cls, path: str, split: str, clip: float, tasks: tuple[str, ...] | None = None) -> Frames:
        """The split's annotated frames (those of `tasks` only, where given)."""
        src = open_frames(path, split)
        normalizer = ActionNormalizer(mode="clip_scale", clip=clip)
        lang = src.lang
        obs, arm, task, time = [], [], [], []
        for (start, end), name in zip(lang.indx, lang.task):
            if tasks is not None and name not in tasks:
                continue
            data = src.read({"robot_obs": (int(start), int(end) + 1), "rel_actions": (int(start), int(end) + 1)})
            n = int(end) - int(start) + 1
            obs.append(data["robot_obs"])
            arm.append(normalizer.normalize(data["rel_actions"])[:, :ARM])
            task.append(np.full(n, name))
            time.append(np.arange(n))
        if not obs:
            of = f" of the tasks {', '.join(tasks)}" if tasks is not None else ""
            raise ValueError(f"{src.name}: no annotated segments{of} in the {split} split")
        return cls(np.concatenate(obs).astype(np.float64), np.concatenate(arm).astype(np.float64),
                   np.concatenate(task), np.concatenate(time))


def smooth_l1(error: np.ndarray) -> float:
    a = np.abs(error)
    return float(np.where(a < 1.0, 0.5 * a**2, a - 0.5).mean())


def _group_means(keys: np.ndarray, values: np.ndarray) -> dict:
    return {k: values[keys == k].mean(0) for k in np.unique(keys)}


def _linear_features(robot_obs: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return np.concatenate([(robot_obs - mean) / std, np.ones((len(robot_obs), 1))], 1)


def _tcp_motion(f: Frames) -> np.ndarray:
    """The TCP pose change since the previous frame of the segment (Euler angles wrapped), 0 at its first frame."""
    tcp = f.robot_obs[:, :6]
    motion = np.diff(tcp, axis=0, prepend=tcp[:1])
    motion[:, 3:] = wrap_angle(motion[:, 3:])
    motion[f.time == 0] = 0.0
    return motion


def _fit_linear(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.linalg.solve(x.T @ x + RIDGE * len(x) * np.eye(x.shape[1]), x.T @ y)


def predictors(train: Frames) -> dict[str, Callable[[Frames], np.ndarray]]:
    """Each predictor, fitted on `train`: a function of a split's Frames to its (N, 6) predicted arm actions."""
    mean = train.arm.mean(0)
    task_mean = _group_means(train.task, train.arm)
    steps = np.array([f"{t}/{s // TIME_STEP}" for t, s in zip(train.task, train.time)])
    task_time = _group_means(steps, train.arm)
    obs_mean, obs_std = train.robot_obs.mean(0), train.robot_obs.std(0) + 1e-6
    x = _linear_features(train.robot_obs, obs_mean, obs_std)
    linear = _fit_linear(x, train.arm)
    per_task = {t: _fit_linear(x[train.task == t], train.arm[train.task == t]) for t in task_mean}
    train_motion = _tcp_motion(train)
    motion_mean, motion_std = train_motion.mean(0), train_motion.std(0) + 1e-9
    motion = _fit_linear(_linear_features(train_motion, motion_mean, motion_std), train.arm)

    def by_task(f: Frames) -> np.ndarray:
        return np.stack([task_mean.get(t, mean) for t in f.task])

    def by_task_time(f: Frames) -> np.ndarray:
        return np.stack([task_time.get(f"{t}/{s // TIME_STEP}", task_mean.get(t, mean)) for t, s in zip(f.task, f.time)])

    def by_task_linear(f: Frames) -> np.ndarray:
        xf = _linear_features(f.robot_obs, obs_mean, obs_std)
        out = xf @ linear
        for t, w in per_task.items():
            rows = f.task == t
            out[rows] = xf[rows] @ w
        return out

    return {
        "mean": lambda f: np.broadcast_to(mean, f.arm.shape),
        "task mean": by_task,
        "task x time": by_task_time,
        "robot_obs linear": lambda f: _linear_features(f.robot_obs, obs_mean, obs_std) @ linear,
        "task x robot_obs linear": by_task_linear,
        "last TCP motion linear": lambda f: _linear_features(_tcp_motion(f), motion_mean, motion_std) @ motion,
    }


def baselines(path: str, clip: float = 1.0, tasks: tuple[str, ...] | None = None) -> dict[str, dict[str, float]]:
    """{predictor: {"training": loss, "validation": loss}} of the arm's smooth-L1 loss (on `tasks`' frames only,
    where given)."""
    if clip <= 0:
        raise ValueError(f"--clip must be > 0, got {clip}")
    train = Frames.read(path, "training", clip, tasks)
    absent = sorted(set(tasks or ()) - set(train.task))
    if absent:
        raise ValueError(f"--tasks {', '.join(absent)}: no annotated segments in the training split of {path}")
    val = Frames.read(path, "validation", clip, tasks)
    return {name: {"training": smooth_l1(predict(train) - train.arm), "validation": smooth_l1(predict(val) - val.arm)}
            for name, predict in predictors(train).items()}


def scene_states(path: str, split: str, tasks: tuple[str, ...] | None = None) -> np.ndarray:
    """The scaled scene-state targets of the split's annotated frames (those of `tasks` only, where given)."""
    src = open_frames(path, split)
    rows = [get_layout(scene).scene_obs_by_color(src.read({"scene_obs": (int(s), int(e) + 1)})["scene_obs"])
            for (s, e), name, scene in zip(src.lang.indx, src.lang.task, segment_scenes(src, src.lang))
            if tasks is None or name in tasks]
    return np.concatenate(rows).astype(np.float64)[:, SCENE_STATE] * SCENE_STATE_SCALE


def state_baselines(path: str, tasks: tuple[str, ...] | None = None) -> dict[str, dict[str, float]]:
    """{"mean state": {"training": loss, "validation": loss}}: the scene-state loss of the training mean."""
    train, val = scene_states(path, "training", tasks), scene_states(path, "validation", tasks)
    mean = train.mean(0)
    return {"mean state": {"training": smooth_l1(train - mean), "validation": smooth_l1(val - mean)}}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m harness.train.baselines", description=__doc__.split("\n\n")[0])
    ap.add_argument("data", help="a dataset with training and validation splits (CALVIN npz or shards)")
    ap.add_argument("--clip", type=float, default=1.0, help="the clip_scale normaliser's clip (default: %(default)s)")
    ap.add_argument("--tasks", nargs="+", help="fit and score on these tasks' frames only (default: all)")
    args = ap.parse_args(argv)
    try:
        table = baselines(args.data, args.clip, several(args.tasks))
        state = state_baselines(args.data, several(args.tasks))
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}") from None
    for loss, rows in (("loss_arm", table), ("loss_state", state)):
        cells = [[name, f"{v['training']:.4f}", f"{v['validation']:.4f}"] for name, v in rows.items()]
        print("\n".join(markdown_table(["predictor", f"training {loss}", f"validation {loss}"], cells, align="---:")) + "\n")


if __name__ == "__main__":
    main()
