"""The checkpoint against the data: its normaliser, its predictions on recorded windows, its tokenizer."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import torch

from agents.vla.heads import SCENE_STATE, SCENE_STATE_PARTS, SCENE_STATE_SCALE
from agents.vla.model import VLAModel
from harness.data.calvin_format import LangAnnotations
from harness.data.normalization import ActionNormalizer
from harness.data.sync import spread
from harness.data.windows import FrameSource, WindowDataset, WindowOptions, collate_windows
from harness.doctor.report import Check, judged
from harness.tasks import TASK_NAMES, eval_instruction

CLIPPED_WARN, CLIPPED_FAIL = 0.01, 0.10  # share of a dimension's recorded actions beyond the normaliser's clip
ZSCORE_MEAN_TOLERANCE = 0.5  # |mean - data mean| in units of the data's std
ZSCORE_STD_RATIO = 2.0  # std and the data's std may differ by at most this factor
OUT_OF_RANGE_FAIL = 0.05  # share of predicted relative arm actions outside the env's [-1, 1]
FOLLOWS_DATA = 0.3  # correlation of predicted and recorded arm actions that counts as following the data
SCALE_FACTOR = 3.0  # data / prediction scale beyond this factor (either way): another normaliser
GRIPPER_AGREES = 0.8  # share of frames where the predicted gripper matches the recorded command
GRIPPER_INVERTED = 0.75  # share where it is the opposite: the other sign
COVERAGE_WARN = 0.5  # share of evaluation-instruction words seen in the training annotations
INSTRUCTION_MOVES = 0.25  # the instruction's effect on a segment's first action, as a share of the data's
START_FOLLOWS = 0.5  # mean cosine of predicted and recorded translation at segments' first frames
IMAGE_MOVES = 0.25  # the images' effect on a segment's planned path, as a share of the data's spread
IMAGE_KEYS = ("rgb_static", "rgb_gripper")
SWITCH_SEGMENTS = 4  # segments read per gripper switch asked for (not every segment has one)
START_MOVES = 0.1  # a recorded first translation at least this long (relative-action units) has a direction
STATE_VARIES = 0.005  # a scene part whose targets' std is below this (scene_obs units) is not judged: it barely
                     # moves in the frames read (the button springs back within a few frames)
STATE_FITS = 0.8  # R^2 of the scene-state probe on training frames that counts as reading a part there
STATE_READS = 0.5  # R^2 on held-out frames below which it does not read it there
WINDOW_BATCH = 4
ARM_AXES = ("x", "y", "z", "roll", "pitch", "yaw")


def _describe(normalizer: ActionNormalizer) -> str:
    if normalizer.mode == "clip_scale":
        return f"clip_scale +-{normalizer.clip:g}"
    return "zscore mean " + " ".join(f"{m:+.3f}" for m in normalizer.mean) + ", std " + " ".join(f"{s:.3f}" for s in normalizer.std)


def _stats_arm(statistics: dict[str, Any] | None) -> dict[str, np.ndarray]:
    """The rel_actions arm mean/std/min/max of a statistics.yaml (the project's recordings write them;
    CALVIN's own statistics.yaml has none): those present."""
    rel = (statistics or {}).get("rel_actions")
    out = {}
    for key in ("mean", "std", "min", "max"):
        try:
            out[key] = np.asarray(rel[key][:6], float)
        except (TypeError, KeyError, ValueError, IndexError):
            pass
    return out


def normaliser_check(normalizer: ActionNormalizer, rel_actions: np.ndarray, statistics: dict[str, Any] | None,
                     stats_where: str) -> Check:
    """The checkpoint's normaliser against the recorded relative actions and the split's statistics.yaml."""
    arm = np.asarray(rel_actions, float)[:, :6]
    stats = _stats_arm(statistics)
    fail = warn = ""
    if normalizer.mode == "clip_scale":
        clipped = (np.abs(arm) > normalizer.clip + 1e-6).mean(axis=0)
        worst = int(np.argmax(clipped))
        message = (f"{_describe(normalizer)}: {clipped[worst]:.1%} of {len(arm)} recorded {ARM_AXES[worst]} actions lie beyond "
                   f"the clip (99th percentile |a| per axis: {' '.join(f'{v:.2f}' for v in np.percentile(np.abs(arm), 99, axis=0))})")
        if "min" in stats and "max" in stats:
            beyond = [ARM_AXES[d] for d in range(6) if max(-stats["min"][d], stats["max"][d]) > normalizer.clip + 1e-6]
            message += f"; {stats_where}'s range exceeds the clip on {', '.join(beyond) or 'no axis'}"
        if clipped[worst] > CLIPPED_FAIL:
            fail = (f"the normaliser clips {clipped[worst]:.0%} of the data's {ARM_AXES[worst]} actions, so the policy cannot "
                    f"reproduce them: train with a clip that covers the data (data.normalizer.clip)")
        elif clipped[worst] > CLIPPED_WARN:
            warn = "a few recorded actions are clipped: the policy will move a little slower than its demonstrations"
        return judged("normaliser", message, fail, warn)
    references = [("these frames", arm.mean(axis=0), arm.std(axis=0))]
    if "mean" in stats and "std" in stats:
        references.append((stats_where, stats["mean"], stats["std"]))
    message = _describe(normalizer)
    for name, ref_mean, ref_std in references:
        off = np.abs(np.asarray(normalizer.mean) - ref_mean) / np.maximum(ref_std, 1e-6)
        ratio = np.asarray(normalizer.std) / np.maximum(ref_std, 1e-6)
        message += f"; {name}: mean {' '.join(f'{m:+.3f}' for m in ref_mean)}, std {' '.join(f'{v:.3f}' for v in ref_std)}"
        if off.max() > ZSCORE_MEAN_TOLERANCE or ratio.max() > ZSCORE_STD_RATIO or ratio.min() < 1 / ZSCORE_STD_RATIO:
            fail = (f"the normaliser's statistics are not those of {name}: the checkpoint was trained on other data, "
                    "or ships another normalizer.json than it was trained with")
    return judged("normaliser", message, fail, warn)


def window_batches(ds: WindowDataset, indices: list[int], device: torch.device):
    for i in range(0, len(indices), WINDOW_BATCH):
        batch = collate_windows([ds[j] for j in indices[i : i + WINDOW_BATCH]])
        yield {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def predict_windows(model: VLAModel, normalizer: ActionNormalizer, source: FrameSource, windows: int) -> dict[str, np.ndarray]:
    """The model's first action of every frame's chunk on `windows` recorded windows spread over the
    split, beside the recorded relative action of that frame: {"pred": normalised (N, 7), "data": (N, 7)}."""
    cfg = model.cfg
    ds = WindowDataset(source, cfg.window_spec(), normalizer, WindowOptions(augment=False, drop_short_segments=True))
    indices = spread(list(range(len(ds))), windows)
    device = next(model.parameters()).device
    pred = [model.predict(batch)[:, :, 0].float().cpu().numpy() for batch in window_batches(ds, indices, device)]
    data = [source.read({"rel_actions": (t0, t0 + cfg.window_size)})["rel_actions"] for _, t0 in map(ds.window, indices)]
    return {"pred": np.concatenate(pred).reshape(-1, 7), "data": np.asarray(data, float).reshape(-1, 7), "windows": np.asarray(len(indices))}


def predict_segment_starts(model: VLAModel, normalizer: ActionNormalizer, source: FrameSource, segments: int) -> dict[str, Any]:
    """The model's first action at the first frame of `segments` annotated segments (spread over the split),
    once with the segment's own instruction and once with each other task's evaluation instruction, beside the
    recorded first actions: {"own": (N, 7), "swapped": (N, K, 7) un-normalised, "data": (N, 7), "tasks": [N]}.
    At a segment's first frame the arm has not moved yet: in a scene that allows several tasks only the
    instruction tells which one comes."""
    cfg = model.cfg
    ds = WindowDataset(source, cfg.window_spec(), normalizer, WindowOptions(augment=False, drop_short_segments=True))
    chosen = spread(ds.segment_starts().tolist(), segments)
    tasks = sorted(set(ds.lang.task))
    device = next(model.parameters()).device
    own, swapped, data, names = [], [], [], []
    for index in chosen:
        item = ds[int(index)]
        others = [t for t in tasks if t != item["task"]]
        variants = [item] + [{**item, "instruction": eval_instruction(t)} for t in others]
        batch = collate_windows(variants)
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        first = normalizer.denormalize(model.predict(batch)[:, 0, 0].float().cpu().numpy())
        own.append(first[0])
        swapped.append(first[1:])
        _, t0 = ds.window(int(index))
        data.append(source.read({"rel_actions": (t0, t0 + 1)})["rel_actions"][0])
        names.append(item["task"])
    return {"own": np.asarray(own), "swapped": swapped, "data": np.asarray(data, float), "tasks": names}


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two (N, 3) translations (0 where either is zero)."""
    return np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-9)


def segment_start_check(starts: dict[str, Any]) -> Check:
    """Does the policy read the instruction where only the instruction tells the task? Its first action at
    segments' first frames against the recorded one, and how far another task's instruction moves it,
    against how far the recorded first actions of different tasks lie apart.

    A direction is only judged where the demonstration moves (|translation| >= START_MOVES): many subtasks
    start with a still frame (a gripper command, or a turn in place), where a cosine says nothing, and
    there the predicted translation's length is reported instead."""
    own, data, tasks = starts["own"][:, :3], starts["data"][:, :3], starts["tasks"]
    n = len(tasks)
    if n == 0:
        return Check("segment starts", "skip", "no annotated segment to start from")
    moving = np.linalg.norm(data, axis=1) >= START_MOVES
    cos = _cosines(own, data)
    still_len = float(np.linalg.norm(own[~moving], axis=1).mean()) if (~moving).any() else 0.0
    moved = float(np.mean([np.linalg.norm(s[:, :3] - o, axis=1).mean() for s, o in zip(starts["swapped"], own) if len(s)] or [0.0]))
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n) if tasks[i] != tasks[j]]
    apart = float(np.mean([np.linalg.norm(data[i] - data[j]) for i, j in pairs])) if pairs else 0.0
    follows = f"cosine {cos[moving].mean():+.2f} (mean; below 0.5 at {int((cos[moving] < 0.5).sum())})" if moving.any() else "-"
    message = (f"{n} segments' first frames; at the {int(moving.sum())} where the demonstration moves, the predicted "
               f"translation points the recorded way with {follows}; at the {int((~moving).sum())} where it stands "
               f"still, the predicted translation is {still_len:.2f} long; another task's instruction moves the first "
               f"action by {moved:.2f} (relative-action units, x, y, z), the recorded first actions of different tasks "
               f"lie {apart:.2f} apart")
    warn = ""
    if apart > 0 and moved < INSTRUCTION_MOVES * apart:
        warn = ("the instruction barely changes what the policy does where a subtask starts, though the demonstrations "
                "start different tasks differently: it cannot pick the task there (weak language grounding; "
                "docs/TRAINING.md, \"The e2e recipe in closed loop\")")
    elif moving.any() and cos[moving].mean() < START_FOLLOWS:
        warn = ("where a subtask starts the policy does not head where the demonstrations do, though the instruction "
                "is all that tells the task there: in closed loop it leaves for another task's path (weak language "
                "grounding; docs/TRAINING.md, \"The e2e recipe in closed loop\")")
    return judged("segment starts", message, "", warn)


def predict_image_swaps(model: VLAModel, normalizer: ActionNormalizer, source: FrameSource, segments: int) -> dict[str, Any]:
    """The path the model plans at the first frame of `segments` annotated segments (the translation its first
    chunk adds up to), once with the segment's own camera images and once with those of another segment of the
    same task (the next one in the split; the instruction and robot_obs stay the segment's own), beside the
    recorded translation over the same steps of both segments (the chunk, or fewer where a segment is shorter): {"own", "swapped", "data", "partner_data": (N, 3),
    "tasks": [N]}. At a segment's first frame only the images tell where the objects are."""
    cfg = model.cfg
    ds = WindowDataset(source, cfg.window_spec(), normalizer, WindowOptions(augment=False, drop_short_segments=True))
    by_task: dict[str, list[int]] = {}
    for k, index in enumerate(ds.segment_starts().tolist()):
        by_task.setdefault(ds.lang.task[k], []).append(int(index))
    pairs = [(i, group[(k + 1) % len(group)]) for group in by_task.values() if len(group) > 1 for k, i in enumerate(group)]
    device = next(model.parameters()).device
    out: dict[str, list] = {"own": [], "swapped": [], "data": [], "partner_data": [], "tasks": []}
    for index, partner in spread(sorted(pairs), segments):
        item, other = ds[index], ds[partner]
        swapped = {**item, **{k: other[k] for k in IMAGE_KEYS if k in item}}
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in collate_windows([item, swapped]).items()}
        # the steps both segments have (a chunk may run past a short segment's end, and past the data's)
        steps = min(_steps_left(ds, at, cfg.chunk_size) for at in (index, partner))
        chunks = normalizer.denormalize(model.predict(batch)[:, 0].float().cpu().numpy().reshape(-1, 7))
        planned = chunks.reshape(2, -1, 7)[:, :steps, :3].sum(axis=1)
        out["own"].append(planned[0])
        out["swapped"].append(planned[1])
        for key, at in (("data", index), ("partner_data", partner)):
            _, t0 = ds.window(at)
            out[key].append(source.read({"rel_actions": (t0, t0 + steps)})["rel_actions"][:, :3].sum(axis=0))
        out["tasks"].append(item["task"])
    return {k: (v if k == "tasks" else np.asarray(v, float).reshape(-1, 3)) for k, v in out.items()}


def _steps_left(ds: WindowDataset, index: int, chunk: int) -> int:
    """Frames of item `index`'s segment from its first frame on, at most `chunk`."""
    k, t0 = ds.window(index)
    return min(chunk, int(ds.lang.indx[k, 1]) + 1 - t0)


def image_check(swaps: dict[str, Any]) -> Check:
    """Does the policy look where the objects are? At segments' first frames, how far another scene's images
    (same task, same instruction and robot_obs) move the path it plans, against how far the recorded paths of
    those two segments lie apart."""
    n = len(swaps["tasks"])
    if n == 0:
        return Check("images", "skip", "no task with two annotated segments to swap images between")
    moved = float(np.linalg.norm(swaps["own"] - swaps["swapped"], axis=1).mean())
    apart = float(np.linalg.norm(swaps["data"] - swaps["partner_data"], axis=1).mean())
    cos = _cosines(swaps["own"], swaps["data"])
    message = (f"{n} segments' first frames, each also with the images of another segment of its task: they move "
               f"the planned path (the first chunk's translation) by {moved:.2f}, where the two segments' recorded "
               f"paths lie {apart:.2f} apart (relative-action units, x, y, z); the planned path points the recorded "
               f"way with cosine {cos.mean():+.2f} (mean)")
    warn = ""
    if apart > 0 and moved < IMAGE_MOVES * apart:
        warn = ("the camera images barely change the path the policy plans where a subtask starts, though the "
                "demonstrations head elsewhere when the objects are elsewhere: it plays a task's average path "
                "instead of heading for the object (weak visual grounding; docs/TRAINING.md, \"Learning all 34 "
                "tasks on CPU\")")
    return judged("images", message, "", warn)


def predict_scene_state(model: VLAModel, normalizer: ActionNormalizer, source: FrameSource, windows: int) -> dict[str, np.ndarray]:
    """The scene-state probe (the recipe's training-only head, `loss.state_weight`) on every frame of `windows`
    recorded windows spread over the split, beside the frames' targets, both in scene_obs units: {"pred",
    "true": (N, 15) in agents.vla.heads.SCENE_STATE's order}."""
    if model.state_probe is None:
        raise ValueError("the model has no scene-state probe (loss.state_weight is 0)")
    ds = WindowDataset(source, model.cfg.window_spec(), normalizer, WindowOptions(augment=False, drop_short_segments=True))
    indices = spread(list(range(len(ds))), windows)
    device = next(model.parameters()).device
    pred, true = [], []
    with torch.no_grad():
        for batch in window_batches(ds, indices, device):
            pred.append(model.state_probe(model.scene_features(batch)).float().cpu().numpy().reshape(-1, len(SCENE_STATE)))
            true.append(batch["scene_obs"].float().cpu().numpy()[..., SCENE_STATE].reshape(-1, len(SCENE_STATE)))
    return {"pred": np.concatenate(pred) / SCENE_STATE_SCALE, "true": np.concatenate(true)}


def r2_by_part(states: dict[str, np.ndarray]) -> dict[str, float | None]:
    """R^2 of the probe for each scene part (its columns pooled), None where the part barely moves."""
    out: dict[str, float | None] = {}
    for name, cols in SCENE_STATE_PARTS:
        pred, true = states["pred"][:, cols], states["true"][:, cols]
        if float(np.sqrt(np.sum(true.var(axis=0)))) < STATE_VARIES:
            out[name] = None
            continue
        out[name] = 1.0 - float(np.sum((pred - true) ** 2)) / float(np.sum((true - true.mean(axis=0)) ** 2))
    return out


def scene_state_check(seen: dict[str, np.ndarray], held_out: dict[str, np.ndarray] | None, held_out_name: str = "validation",
                      state_from: str = "lrn") -> Check:
    """Do the image features say where things are in scenes the model has not trained on? The scene-state
    probe's R^2 per part of the scene on held-out frames, beside its R^2 on training frames. A part it reads on
    the training frames and not on held-out ones is remembered (the training scenes told apart by other cues),
    not seen: in closed loop the policy then plays one habit for both states of it (the door moved the same
    way whether it is left or right). `state_from`: what the probe reads (`loss.state_from`), for the advice."""
    fit = r2_by_part(seen)
    if held_out is None:
        shown = ", ".join(f"{n} {r:+.2f}" for n, r in fit.items() if r is not None)
        return Check("scene state", "skip", f"no held-out split to read the probe on; on training frames R^2 {shown}")
    held = r2_by_part(held_out)
    parts = []
    for name in fit:
        if held[name] is None:
            parts.append(f"{name} -")
        else:
            parts.append(f"{name} {held[name]:+.2f}" + (f" ({fit[name]:+.2f})" if fit[name] is not None else ""))
    message = (f"the scene-state probe on {len(held_out['true'])} held-out frames ({held_out_name} split), R^2 by part "
               f"(on {len(seen['true'])} training frames): " + ", ".join(parts) + "; - barely moves there")
    remembered = [n for n in fit if held[n] is not None and fit[n] is not None and fit[n] >= STATE_FITS and held[n] < STATE_READS]
    warn = ""
    if remembered:
        remedy = ("read the probe from the image tokens (model.loss.state_from=image), where no instruction can key it, "
                  "or record more scenes" if state_from == "lrn" else "record more scenes (chains) before training longer")
        warn = (f"the features tell the {', '.join(remembered)} on training frames but not on held-out ones: the model "
                f"remembers the training scenes instead of reading those parts from the images, and in closed loop "
                f"acts the same whatever their state; {remedy} (docs/TRAINING.md, \"What the features read\")")
    return judged("scene state", message, "", warn)


def predict_gripper_switches(model: VLAModel, normalizer: ActionNormalizer, source: FrameSource, switches: int) -> dict[str, Any]:
    """The predicted gripper at the frames where the recorded command switches (open -> closed to grasp,
    closed -> open to let go), in up to 4 x `switches` segments spread over the split, and at the frames of the
    same windows before the switch.
    A switch is read in the window of its segment that ends at it (the segment's first window where it comes
    earlier), as a policy in closed loop sees it.

    Each window is read twice: as recorded, and with robot_obs's last gripper action (its entry 14) set to the
    new command in every frame up to the switch, as if the gripper had already switched. A policy that reads
    where the gripper is from the images follows the recorded command; one that copies the last gripper action
    from robot_obs predicts the switch only once robot_obs shows it. Returns, per switch: "new" (the new command,
    True = open), "own"/"forced" (first predicted gripper at the switch frame, True = open), "own_chunk" (whether
    any gripper entry of that frame's chunk is the new command), and over the frames before the switches:
    "steady_own"/"steady_forced" (first predicted gripper, True = open) with "steady_data" (recorded)."""
    cfg = model.cfg
    if not cfg.use_proprio:
        raise ValueError("the model takes no robot_obs (use_proprio=false): there is no last gripper action to copy")
    ds = WindowDataset(source, cfg.window_spec(), normalizer, WindowOptions(augment=False, drop_short_segments=True))
    W = cfg.window_size
    found = []  # (item index, position of the switch in the window, new command)
    starts = ds.segment_starts()
    # at most SWITCH_SEGMENTS x `switches` segments are read, spread over the split: a CALVIN split has ~20k
    # segments, and reading every frame's actions from npz files would take the doctor minutes
    for k in spread(list(range(len(ds.lang.indx))), SWITCH_SEGMENTS * switches):
        s, e = ds.lang.indx[k]
        grip = source.read({"rel_actions": (int(s), int(e) + 1)})["rel_actions"][:, 6] > 0
        for t in np.flatnonzero(grip[1:] != grip[:-1]) + 1:
            t0 = max(int(t) - W + 1, 0)  # from the segment's first frame
            found.append((int(starts[k]) + t0, int(t) - t0, bool(grip[t])))
    device = next(model.parameters()).device
    out: dict[str, list] = {k: [] for k in ("new", "own", "forced", "own_chunk", "steady_own", "steady_forced", "steady_data")}
    for index, at, new in spread(found, switches):
        item = ds[index]
        forced_obs = item["robot_obs"].copy()
        forced_obs[: at + 1, 14] = 1.0 if new else -1.0
        batch = collate_windows([item, {**item, "robot_obs": forced_obs}])
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        opens = model.predict(batch)[..., 6].float().cpu().numpy() > 0.5  # (2, W, C)
        out["new"].append(new)
        out["own"].append(opens[0, at, 0])
        out["forced"].append(opens[1, at, 0])
        out["own_chunk"].append(bool((opens[0, at] == new).any()))
        out["steady_own"] += opens[0, :at, 0].tolist()
        out["steady_forced"] += opens[1, :at, 0].tolist()
        out["steady_data"] += [not new] * at
    return {k: np.asarray(v, bool) for k, v in out.items()}


def _share(flags: np.ndarray) -> float:
    """The share of True among `flags` (0 when there are none)."""
    return float(flags.mean()) if len(flags) else 0.0


def gripper_switch_check(switches: dict[str, Any]) -> Check:
    """Does the policy decide when to grasp and let go, or copy the last gripper action from robot_obs?"""
    new = switches["new"]
    n = len(new)
    if n == 0:
        return Check("gripper switches", "skip", "no recorded gripper switch in the windows read")
    hit = switches["own"] == new
    forced_hit = switches["forced"] == new
    steady_kept = switches["steady_own"] == switches["steady_data"]
    steady_copied = switches["steady_forced"] != switches["steady_data"]
    closes = ~new
    message = (f"at {n} frames where the recorded gripper command switches ({int(closes.sum())} closes, {int(new.sum())} opens) "
               f"the predicted gripper switches with it at {_share(hit):.0%} (closes {_share(hit[closes]):.0%}, "
               f"opens {_share(hit[new]):.0%}); the switch is somewhere in that frame's chunk at "
               f"{_share(switches['own_chunk']):.0%}; with robot_obs's last gripper action already switched, at "
               f"{_share(forced_hit):.0%}. In the {len(steady_kept)} frames before the switches the prediction matches the "
               f"recorded command at {_share(steady_kept):.0%}, and follows a flipped last gripper action at {_share(steady_copied):.0%}")
    warn = ""
    if _share(hit) < GRIPPER_AGREES and _share(steady_copied) > 1 - GRIPPER_AGREES:
        warn = ("the policy keeps the gripper where robot_obs says it was and switches it only when robot_obs says it "
                "switched: it copies the last gripper action instead of deciding from the images when to grasp or let "
                "go (copycat). Train with model.proprio_gripper=false and model.loss.gripper_switch_weight=10 "
                "(docs/TRAINING.md, \"Why it does not grasp\")")
    return judged("gripper switches", message, "", warn)


def prediction_checks(normalizer: ActionNormalizer, predicted: dict[str, np.ndarray]) -> list[Check]:
    """Out-of-range predictions and the predicted arm against the data; the predicted gripper against the data's."""
    pred, data = predicted["pred"], predicted["data"]
    env = normalizer.denormalize(pred)
    outside_env = float((np.abs(env[:, :6]) > 1 + 1e-6).mean())
    outside_norm = float((np.abs(pred[:, :6]) > 1 + 1e-6).mean())
    p, r = env[:, :6].ravel(), data[:, :6].ravel()
    corr = float(np.corrcoef(p, r)[0, 1]) if p.std() > 0 and r.std() > 0 else float("nan")
    scale = float(p @ r / (p @ p)) if p @ p > 0 else float("inf")
    message = (f"{int(predicted['windows'])} windows, {len(pred)} frames: {outside_env:.1%} of the un-normalised arm actions "
               f"lie outside the env's [-1, 1] ({outside_norm:.1%} of the model's normalised outputs outside [-1, 1]); "
               f"correlation with the recorded actions {corr:+.2f}, recorded/predicted scale {scale:.2f}")
    fail = warn = ""
    if outside_env > OUT_OF_RANGE_FAIL:
        fail = ("the normaliser turns the model's outputs into relative actions beyond [-1, 1]: normalizer.json is not "
                "the one the model was trained with, or the model predicts another kind of action")
    elif corr < -FOLLOWS_DATA:
        fail = "the predicted arm actions go against the recorded ones: an action frame or sign differs between training and this data"
    elif corr >= FOLLOWS_DATA and not 1 / SCALE_FACTOR < scale < SCALE_FACTOR:
        fail = (f"the predictions are {scale:.1f} times {'smaller' if scale > 1 else 'larger'} than the recorded actions: "
                "the checkpoint un-normalises with other statistics than it was trained with (normalizer.json)")
    elif not corr >= FOLLOWS_DATA:
        warn = "the predictions barely follow the recorded actions: an undertrained checkpoint, or data unlike its training data"
    return [judged("predictions", message, fail, warn), _gripper_check(pred[:, 6] > 0.5, data[:, 6] > 0)]


def _gripper_check(pred_open: np.ndarray, data_open: np.ndarray) -> Check:
    agree = float((pred_open == data_open).mean())
    message = (f"the predicted gripper matches the recorded command in {agree:.0%} of {len(pred_open)} frames "
               f"(recorded: open in {data_open.mean():.0%}, predicted: open in {pred_open.mean():.0%}; CALVIN: +1 opens)")
    fail = warn = ""
    if 1 - agree >= GRIPPER_INVERTED:
        fail = ("the predicted gripper is the recorded one inverted: the checkpoint learnt the other gripper sign "
                "(data with -1 = open?); retrain on data with CALVIN's convention")
    elif agree < GRIPPER_AGREES:
        warn = "the predicted gripper often disagrees with the data: an undertrained checkpoint, or another gripper convention"
    return judged("gripper", message, fail, warn)


_WORD = re.compile(r"[a-z]+")


def _words(texts: list[str]) -> set[str]:
    return {w for t in texts for w in _WORD.findall(t.lower())}


def instruction_check(model: VLAModel, training: LangAnnotations | None) -> Check:
    """CALVIN's 34 evaluation instructions through the checkpoint's tokenizer: unknown tokens, length
    against backbone.max_instruction_tokens, and (with training data) how many of their words it saw."""
    tok = model.backbone.tokenizer
    limit = model.cfg.backbone.max_instruction_tokens
    texts = [eval_instruction(t) for t in TASK_NAMES]
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    unk = tok.unk_token_id
    n_unknown = sum(i == unk for seq in ids for i in seq) if unk is not None else 0
    unknown_words = sorted(w for w in _words(texts) if unk is not None and unk in tok(" " + w, add_special_tokens=False)["input_ids"])
    longest = max(len(seq) for seq in ids)
    message = (f"{len(texts)} evaluation instructions, {sum(map(len, ids))} tokens: {n_unknown} unknown; "
               f"longest {longest} tokens (backbone.max_instruction_tokens {limit})")
    fail = warn = ""
    if n_unknown:
        fail = (f"the tokenizer does not know {', '.join(unknown_words) or 'some characters'}: the policy cannot read "
                "these words of the evaluation instructions; use a tokenizer that covers them")
    elif longest > limit:
        fail = f"evaluation instructions are cut to {limit} tokens: raise backbone.max_instruction_tokens above {longest}"
    if training is not None and len(training):
        seen = _words(list(training.ann))
        eval_words = _words(texts)
        coverage = len(eval_words & seen) / len(eval_words)
        message += f"; {coverage:.0%} of their {len(eval_words)} words occur in the training annotations"
        if coverage < COVERAGE_WARN and not fail:
            warn = "most words of CALVIN's evaluation instructions never occur in training: expect poor language grounding"
    return judged("instructions", message, fail, warn)
