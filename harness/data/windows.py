"""Language-annotated windows for training: `window_size` frames + a chunk of future actions per frame.

For an annotation over inclusive frames [s, e], windows start at every t0 in [s, e - W + 1] (so the
window's W frames all lie in the segment: e - s + 2 - W windows). Frame t0 + i of a window carries
the chunk of actions of frames t0 + i .. t0 + i + C - 1 (its own action first). `action_mask[i, j]`
is False exactly where t0 + i + j > e: the chunk runs past the segment end. The segment's last frame
is a valid target (RoboVLMs masks it by mistake); masked slots repeat the last valid action.

Actions are CALVIN's `rel_actions`, normalised by the configured `ActionNormalizer` (the same object
the checkpoint saves and the agent un-normalises with). Images stay uint8 and keep their size: the
model's processor resizes and normalises them. Random-shift augmentation (replicate padding, integer
shift) is drawn once per window and camera and applied to every frame of the window.

The frames come from a `FrameSource`: per-frame npz files (`NpzFrameSource`) or the memory-mapped
shards (`harness.data.shards.ShardFrameSource`); both yield identical items.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from harness.data.calvin_format import CalvinSplit, LangAnnotations, range_in_runs, scene_of_frame
from harness.data.normalization import ActionNormalizer
from harness.sim.layout import get_layout


class FrameSource(Protocol):
    """Where windows read frames from."""

    name: str  # for messages (a path)

    @property
    def lang(self) -> LangAnnotations: ...

    @property
    def lang_where(self) -> str: ...

    @property
    def runs(self) -> np.ndarray:
        """(M, 2) sorted inclusive runs of contiguous frame ids that can be read."""
        ...

    @property
    def scene_info(self) -> dict[str, list[int]] | None:
        """{"calvin_scene_X": [first, last]} frame ranges, where the data says (None: all scene D)."""
        ...

    def read(self, ranges: dict[str, tuple[int, int]]) -> dict[str, np.ndarray]:
        """For each key, the stacked frames [start, stop) of one contiguous run."""
        ...


class NpzFrameSource:
    """Frames from a CALVIN split folder of per-frame npz files (each file opened once per read)."""

    def __init__(self, split: CalvinSplit | str | Path, split_name: str | None = None):
        self.split = split if isinstance(split, CalvinSplit) else CalvinSplit(split, split_name)
        self.name = str(self.split.path)

    @property
    def lang(self) -> LangAnnotations:
        return self.split.lang

    @property
    def lang_where(self) -> str:
        return str(self.split.lang_path)

    @property
    def runs(self) -> np.ndarray:
        return self.split.runs

    @property
    def scene_info(self) -> dict[str, list[int]] | None:
        return self.split.scene_info()

    def read(self, ranges: dict[str, tuple[int, int]]) -> dict[str, np.ndarray]:
        lo = min(a for a, _ in ranges.values())
        hi = max(b for _, b in ranges.values())
        out: dict[str, list[np.ndarray]] = {k: [] for k in ranges}
        for fid in range(lo, hi):
            keys = [k for k, (a, b) in ranges.items() if a <= fid < b]
            for k, v in self.split.load_frame(fid, keys).items():
                out[k].append(v)
        return {k: np.stack(v) for k, v in out.items()}


@dataclass(frozen=True)
class WindowSpec:
    """What one sample holds, decided by the model that trains on it (agents.vla.config.VLAConfig.window_spec):
    `window_size` frames, `chunk_size` future actions per frame, these cameras, and robot_obs or not."""

    window_size: int
    chunk_size: int
    cameras: tuple[str, ...] = ("static",)
    proprio: bool = True  # robot_obs in the batch
    scene_state: bool = False  # scene_obs in the batch, blocks in red, blue, pink order: a training target only

    def __post_init__(self) -> None:
        for name in ("window_size", "chunk_size"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        unknown = sorted(set(self.cameras) - {"static", "gripper"})
        if "static" not in self.cameras or unknown:
            raise ValueError(f"cameras must be static, optionally with gripper; got {list(self.cameras)}")
        object.__setattr__(self, "cameras", tuple(self.cameras))

    @property
    def gripper(self) -> bool:
        return "gripper" in self.cameras


@dataclass(frozen=True, kw_only=True)
class WindowOptions:
    """How windows are drawn from a dataset, whatever the model: augmentation and which segments train
    (harness.data.config.DataConfig holds these with the dataset's location)."""

    augment: bool = True  # random shift, drawn once per window; never for validation (`for_validation`)
    rgb_pad: int = 10  # static camera shift range, pixels
    gripper_pad: int = 4  # gripper camera shift range, pixels
    exclude_tasks: tuple[str, ...] = ()  # task names left out of training (validation keeps all)
    n_shot: int | None = None  # keep n annotated segments per task for training
    n_shot_seed: int = 0
    drop_short_segments: bool = False  # else a segment shorter than window_size is an error
    # Extra draws of each segment's first window (frames s .. s + W - 1): where a subtask starts, the arm has
    # not moved yet and only the instruction tells the task, a decision the other windows of a segment
    # rarely train (docs/TRAINING.md, "The e2e recipe in closed loop"). 0: every window once.
    start_repeats: int = 0
    # Each training window's instruction drawn afresh from the distinct annotations of its task among the
    # training segments, instead of its own segment's: every phrasing is then read with every demonstration
    # of the task, not with the few it was recorded with (docs/TRAINING.md, "The e2e recipe in closed loop").
    resample_instructions: bool = False
    # Each word of a training window's instruction left out with this probability (at least one kept): a
    # policy that must do with any subset of the words cannot hang the task on one of them.
    instruction_word_dropout: float = 0.0

    def __post_init__(self) -> None:
        for name in ("rgb_pad", "gripper_pad"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.instruction_word_dropout < 1.0:
            raise ValueError(f"instruction_word_dropout must be in [0, 1), got {self.instruction_word_dropout}")
        if self.start_repeats < 0:
            raise ValueError(f"start_repeats must be >= 0, got {self.start_repeats}")
        if self.n_shot is not None and self.n_shot < 1:
            raise ValueError(f"n_shot must be >= 1 or null, got {self.n_shot}")
        object.__setattr__(self, "exclude_tasks", tuple(self.exclude_tasks))

    def unaugmented(self) -> "WindowOptions":
        """The same windows each once as recorded: no image shift, no repeated first windows, the annotated
        instruction whole."""
        return replace(self, augment=False, start_repeats=0, resample_instructions=False, instruction_word_dropout=0.0)

    def for_validation(self) -> "WindowOptions":
        """Validation windows: every task and segment, unaugmented."""
        return replace(self.unaugmented(), exclude_tasks=(), n_shot=None)


def random_shift(frames: np.ndarray, pad: int, dy: int, dx: int) -> np.ndarray:
    """(T, H, W, C) frames shifted by one (dy, dx) for all T: replicate pad by `pad`, crop at (dy, dx) in [0, 2*pad].

    out[:, y, x] = frames[:, clip(y + dy - pad), clip(x + dx - pad)], written into one new array with
    block copies (a fancy-index gather is ~20x slower on 200x200 images).
    """
    _, h, w, _ = frames.shape
    sy, sx = max(1 - h, min(h - 1, dy - pad)), max(1 - w, min(w - 1, dx - pad))
    y0, y1, x0, x1 = max(0, -sy), min(h, h - sy), max(0, -sx), min(w, w - sx)
    out = np.empty(frames.shape, frames.dtype)
    out[:, y0:y1, x0:x1] = frames[:, y0 + sy : y1 + sy, x0 + sx : x1 + sx]
    out[:, y0:y1, :x0] = out[:, y0:y1, x0 : x0 + 1]
    out[:, y0:y1, x1:] = out[:, y0:y1, x1 - 1 : x1]
    out[:, :y0] = out[:, y0 : y0 + 1]
    out[:, y1:] = out[:, y1 - 1 : y1]
    return out


def select_segments(lang: LangAnnotations, window_size: int, cfg: WindowOptions, where: str) -> np.ndarray:
    """Indices of the annotations that make windows: exclusions, short segments, n-shot."""
    tasks = np.asarray(lang.task, dtype=object)
    unknown = sorted(set(cfg.exclude_tasks) - set(lang.task))
    if unknown:
        raise ValueError(f"exclude_tasks {unknown} are not tasks of {where} (tasks there: {sorted(set(lang.task))})")
    keep = np.flatnonzero(~np.isin(tasks, list(cfg.exclude_tasks)))
    lengths = lang.indx[keep, 1] - lang.indx[keep, 0] + 1
    short = lengths < window_size
    if short.any() and not cfg.drop_short_segments:
        k = keep[int(np.argmin(lengths))]
        raise ValueError(
            f"window_size={window_size} is longer than {int(short.sum())} of {len(keep)} annotated segments in "
            f"{where} (shortest: entry {k}, {lang.task[k]!r}, {int(lengths.min())} frames); lower window_size or set "
            "drop_short_segments"
        )
    keep = keep[~short]
    if cfg.n_shot is not None:
        rng = np.random.default_rng(cfg.n_shot_seed)
        chosen = []
        for task in sorted(set(tasks[keep])):
            of_task = keep[tasks[keep] == task]
            if len(of_task) < cfg.n_shot:
                warnings.warn(f"n_shot={cfg.n_shot}: task {task!r} has only {len(of_task)} segments in {where}", stacklevel=3)
            chosen.append(np.sort(rng.choice(of_task, size=min(cfg.n_shot, len(of_task)), replace=False)))
        keep = np.sort(np.concatenate(chosen)) if chosen else keep[:0]
    if len(keep) == 0:
        raise ValueError(f"no annotated segment of {where} is left to make windows from")
    return keep


def task_phrasings(lang: LangAnnotations) -> dict[str, tuple[str, ...]]:
    """Each task's distinct annotations, sorted (so that a draw depends on the data, not on its order)."""
    pools: dict[str, set[str]] = {}
    for task, ann in zip(lang.task, lang.ann):
        pools.setdefault(task, set()).add(ann)
    return {task: tuple(sorted(anns)) for task, anns in pools.items()}


def segment_scenes(source: FrameSource, lang: LangAnnotations) -> list[str]:
    """Each segment's scene letter from the split's scene_info (all D without one); a segment outside every
    range of a scene_info that exists is an error, not a guess (the block order of scene_obs depends on it)."""
    scene_info = source.scene_info
    if scene_info:
        outside = [(k, int(s)) for k, s in enumerate(lang.indx[:, 0])
                   if not any(first <= int(s) <= last for first, last in scene_info.values())]
        if outside:
            k, frame = outside[0]
            raise ValueError(f"{source.name}: scene_info {scene_info} places no scene at frame {frame} (annotation "
                             f"{k}, {lang.task[k]!r}; {len(outside)} segments in all): the scene-state targets need "
                             "each frame's scene")
    return [scene_of_frame(int(s), scene_info) for s in lang.indx[:, 0]]


class WindowDataset(Dataset):
    """Windows of language-annotated segments; items are dicts of numpy arrays and strings.

    `spec` (from the model) says what a window holds, `options` how windows are drawn (default: no
    augmentation, every segment)."""

    def __init__(self, source: FrameSource, spec: WindowSpec, normalizer: ActionNormalizer,
                 options: WindowOptions | None = None):
        self.source = source
        self.spec = spec
        self.options = options if options is not None else WindowOptions(augment=False)
        self.normalizer = normalizer
        lang = source.lang
        runs = source.runs
        for i, (s, e) in enumerate(lang.indx):
            if len(runs) == 0 or not range_in_runs(runs, int(s), int(e)):
                raise ValueError(
                    f"{source.lang_where} [info.indx]: entry {i} ({lang.task[i]!r}) covers frames [{s}, {e}], which are not "
                    f"all frames of {source.name}"
                )
        self.segments = select_segments(lang, spec.window_size, self.options, source.lang_where)
        self.lang = lang.select(self.segments)
        counts = self.lang.indx[:, 1] - self.lang.indx[:, 0] + 2 - spec.window_size
        self._windows = counts  # a segment's distinct windows; its items beyond them repeat the first
        self._cum = np.cumsum(counts + self.options.start_repeats)
        self._phrasings = task_phrasings(self.lang) if self.options.resample_instructions else {}
        if spec.scene_state:  # each segment's scene, to give its blocks in the same order in every scene
            self._layouts = [get_layout(scene) for scene in segment_scenes(source, self.lang)]

    def __len__(self) -> int:
        return int(self._cum[-1])

    def segment_starts(self) -> np.ndarray:
        """The item index of each segment's first window (its frames s .. s + W - 1)."""
        return np.r_[0, self._cum[:-1]].astype(int)

    def window(self, index: int) -> tuple[int, int]:
        """(segment number in `self.lang`, first frame id) of item `index`."""
        if not 0 <= index < len(self):
            raise IndexError(f"window {index} out of range for {len(self)} windows")
        k = int(np.searchsorted(self._cum, index, side="right"))
        offset = index - (int(self._cum[k - 1]) if k else 0)
        return k, int(self.lang.indx[k, 0]) + (offset if offset < self._windows[k] else 0)

    def instruction(self, k: int) -> str:
        """Segment k's instruction: its own annotation, or (resample_instructions) one of its task's, then
        (instruction_word_dropout) some of its words left out; drawn with torch's RNG like the shift."""
        text = self.lang.ann[k]
        if self.options.resample_instructions:
            pool = self._phrasings[self.lang.task[k]]
            text = pool[int(torch.randint(len(pool), ()))]
        if self.options.instruction_word_dropout > 0:
            words = text.split()
            keep = torch.rand(len(words)) >= self.options.instruction_word_dropout
            if not keep.any():
                keep[int(torch.randint(len(words), ()))] = True
            text = " ".join(w for w, kept in zip(words, keep.tolist()) if kept)
        return text

    def __getitem__(self, index: int) -> dict[str, Any]:
        spec, opts = self.spec, self.options
        W, C = spec.window_size, spec.chunk_size
        k, t0 = self.window(int(index))
        end = int(self.lang.indx[k, 1])
        act_stop = min(t0 + W + C - 1, end + 1)
        ranges = {"rel_actions": (t0, act_stop), "rgb_static": (t0, t0 + W)}
        if spec.gripper:
            ranges["rgb_gripper"] = (t0, t0 + W)
        if spec.proprio:
            ranges["robot_obs"] = (t0, t0 + W)
        if spec.scene_state:
            ranges["scene_obs"] = (t0, t0 + W)
        data = self.source.read(ranges)

        offsets = np.arange(W)[:, None] + np.arange(C)[None, :]
        norm = self.normalizer.normalize(data["rel_actions"])
        item: dict[str, Any] = {
            "rgb_static": data["rgb_static"],
            "actions": norm[np.minimum(offsets, act_stop - t0 - 1)],
            "action_mask": t0 + offsets <= end,
            "instruction": self.instruction(k),
            "task": self.lang.task[k],
        }
        if spec.gripper:
            item["rgb_gripper"] = data["rgb_gripper"]
        if spec.proprio:  # a source may hand out read-only views (memory maps): items own writable arrays
            item["robot_obs"] = np.require(data["robot_obs"], requirements=["C", "W"])
        if spec.scene_state:
            item["scene_obs"] = self._layouts[k].scene_obs_by_color(data["scene_obs"])
        for key, pad in (("rgb_static", opts.rgb_pad), ("rgb_gripper", opts.gripper_pad)):
            if key not in item:
                continue
            if opts.augment and pad > 0:
                # torch's RNG: seeded per DataLoader worker and epoch, reproducible with manual_seed
                dy, dx = (int(v) for v in torch.randint(0, 2 * pad + 1, (2,)))
                item[key] = random_shift(item[key], pad, dy, dx)
            else:  # a source may hand out read-only views (memory maps): items own writable arrays
                item[key] = np.require(item[key], requirements=["C", "W"])
        return item

    def describe(self) -> dict[str, Any]:
        tasks, counts = np.unique(np.asarray(self.lang.task, dtype=object), return_counts=True)
        return {"source": self.source.name, "windows": len(self), "segments": len(self.lang),
                "segments_per_task": dict(zip(tasks.tolist(), counts.tolist()))}


BATCH_KEYS = ("rgb_static", "rgb_gripper", "robot_obs", "scene_obs", "actions", "action_mask", "instruction", "task")


def collate_windows(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Items -> the training batch of docs/ARCHITECTURE.md (uint8 images channels-last, float32, bool)."""
    batch: dict[str, Any] = {}
    for key in BATCH_KEYS:
        if key not in items[0]:
            continue
        values = [it[key] for it in items]
        batch[key] = list(values) if isinstance(values[0], str) else torch.from_numpy(np.stack(values))
    return batch
