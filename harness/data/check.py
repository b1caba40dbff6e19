"""Validation of a dataset (CALVIN npz splits or converted shards) that reports every problem it finds.

`check_path(path)` returns one `CheckReport` per split: the problems (each naming file and key) and a
summary: frames, episodes, annotations per task, action ranges, image shapes. `python -m harness.data
check PATH` prints them and exits non-zero when there is an error.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from tqdm import tqdm

from harness.data.calvin_format import (
    ALL_FRAME_KEYS,
    CALVIN_IMAGE_SHAPES,
    EP_LENS,
    EP_START_END,
    EVAL_EMBEDDINGS,
    FRAME_KEYS,
    FRAME_NAME,
    FRAME_RE,
    LANG_DIR,
    SCENE_INFO,
    SPLITS,
    STATISTICS,
    VECTOR_KEYS,
    CalvinFormatError,
    LangAnnotations,
    Problem,
    check_published_scenes,
    frame_key_problems,
    frame_keys,
    frame_value_problems,
    lang_annotation_path,
    load_pickled_npy,
    merge_ranges,
    open_frame,
    range_in_runs,
    read_episode_bounds,
    read_member,
    read_member_header,
    read_scene_info,
    read_statistics,
)
from harness.data.shards import ANNOTATIONS, ShardFrameSource, is_shard_dir

ACTION_KEYS = ("actions", "rel_actions")


@dataclass
class CheckReport:
    path: str
    format: str  # "npz" or "shards"
    problems: list[Problem] = field(default_factory=list)
    frames: int = 0
    episodes: int = 0
    checked_frames: int = 0
    annotations_per_task: Counter = field(default_factory=Counter)
    action_ranges: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    image_shapes: dict[str, Counter] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    def add_range(self, key: str, values: np.ndarray) -> None:
        lo, hi = values.min(axis=0), values.max(axis=0)
        if key in self.action_ranges:
            lo = np.minimum(lo, self.action_ranges[key][0])
            hi = np.maximum(hi, self.action_ranges[key][1])
        self.action_ranges[key] = (lo, hi)

    def render(self) -> str:
        n_ann = sum(self.annotations_per_task.values())
        lines = [f"== {self.path} ({self.format}) ==",
                 f"frames: {self.frames} in {self.episodes} episodes ({self.checked_frames} frames' contents checked)",
                 f"annotations: {n_ann} over {len(self.annotations_per_task)} tasks"]
        width = max((len(t) for t in self.annotations_per_task), default=0)
        lines += [f"  {t:<{width}}  {n}" for t, n in sorted(self.annotations_per_task.items())]
        lines.append("action ranges (min .. max per dim):")
        for key, (lo, hi) in self.action_ranges.items():
            lines.append(f"  {key:<11} " + "  ".join(f"{a:+.3f}..{b:+.3f}" for a, b in zip(lo, hi)))
        lines.append("image shapes:")
        for key, shapes in self.image_shapes.items():
            lines.append(f"  {key:<13} " + ", ".join(f"{s} x{n}" for s, n in shapes.items()))
        lines += [f"note: {n}" for n in self.notes]
        warnings = [p for p in self.problems if p.severity != "error"]
        lines.append(f"problems: {len(self.errors)} errors, {len(warnings)} warnings")
        lines += [f"  {p.severity.upper()}: {p}" for p in self.problems]
        return "\n".join(lines)


def _id_runs_text(ids: Iterable[int]) -> list[str]:
    ids = np.fromiter(ids, dtype=np.int64)
    runs = merge_ranges(np.stack([ids, ids], axis=1)) if len(ids) else np.zeros((0, 2), np.int64)
    return [FRAME_NAME.format(a) if a == b else f"{FRAME_NAME.format(a)}..{FRAME_NAME.format(b)} ({b - a + 1} files)" for a, b in runs]


def _check_annotations(rep: CheckReport, lang: LangAnnotations, where: str, runs: np.ndarray,
                       episodes: np.ndarray | None = None) -> None:
    rep.annotations_per_task.update(lang.task)
    for i, (s, e) in enumerate(lang.indx):
        if len(runs) == 0 or not range_in_runs(runs, int(s), int(e)):
            rep.problems.append(Problem(where, f"entry {i} ({lang.task[i]!r}) covers frames [{s}, {e}], outside the split's frames", "info.indx"))
    across = _across_episodes(lang.indx, episodes)
    if len(across):  # inside the frames, but its windows would join the end of one episode to the next's start
        i = int(across[0])
        rep.problems.append(Problem(where, f"{len(across)} entries span two episodes, first entry {i} ({lang.task[i]!r}) "
                                           f"over frames {lang.indx[i].tolist()}", "info.indx", severity="warning"))
    if lang.emb is None:
        rep.notes.append("language.emb absent (optional)")


def _across_episodes(indx: np.ndarray, episodes: np.ndarray | None) -> np.ndarray:
    """Indices of the annotations that start in one episode (of well-formed, disjoint [first, last] bounds) and
    end in a later one (one that ends in a gap is outside the split's frames, an error of its own)."""
    if episodes is None or not len(episodes) or not len(indx):
        return np.zeros(0, np.int64)
    eps = episodes[episodes[:, 0] <= episodes[:, 1]]
    eps = eps[np.argsort(eps[:, 0])]

    def episode_of(frames: np.ndarray) -> np.ndarray:  # the episode holding each frame, -1 for none
        k = np.searchsorted(eps[:, 0], frames, side="right") - 1
        return np.where((k >= 0) & (frames <= eps[np.maximum(k, 0), 1]), k, -1)

    first, last = episode_of(indx[:, 0]), episode_of(indx[:, 1])
    return np.flatnonzero((first >= 0) & (last > first))


def _check_frame(rep: CheckReport, path: str, values: dict[str, list[np.ndarray]], quick: bool) -> None:
    """Every member read to its end (zip's CRC check); quick: images and depth by their npy header only."""
    try:
        zf = open_frame(Path(path))
    except CalvinFormatError as e:
        rep.problems += e.problems
        return
    with zf:
        present = frame_keys(zf)
        rep.problems += [Problem(path, "missing key", key) for key in FRAME_KEYS if key not in present]
        for key in present:
            if key not in ALL_FRAME_KEYS:
                continue
            try:
                if quick and key not in VECTOR_KEYS:
                    dtype, shape = read_member_header(zf, key, path)
                    value = None
                else:
                    value = read_member(zf, key, path)
                    dtype, shape = value.dtype, value.shape
            except CalvinFormatError as e:
                rep.problems += e.problems
                continue
            bad = frame_key_problems(path, key, dtype, shape)
            rep.problems += bad
            if bad:
                continue
            if key in VECTOR_KEYS:
                found = frame_value_problems(path, key, value)
                rep.problems += found
                if key in ACTION_KEYS and not found:
                    values[key].append(value)
            else:
                rep.image_shapes.setdefault(key, Counter())[tuple(shape)] += 1


def check_npz_split(split_dir: Path, sample: int | None = None, progress: bool = False, quick: bool = False) -> CheckReport:
    rep = CheckReport(str(split_dir), "npz")
    runs = np.zeros((0, 2), np.int64)
    eps, problems = read_episode_bounds(split_dir)
    rep.problems += problems
    if eps is not None:  # the well-formed episodes are checked even when others are not
        runs = merge_ranges(eps[eps[:, 0] <= eps[:, 1]])
        rep.episodes, rep.frames = len(eps), int((runs[:, 1] - runs[:, 0] + 1).sum())
        _check_episode_lengths(rep, split_dir / EP_LENS, eps)

    lang_path = lang_annotation_path(split_dir)
    if lang_path is None:
        rep.problems.append(Problem(str(split_dir / LANG_DIR / "auto_lang_ann.npy"), "missing file"))
    else:
        try:
            _check_annotations(rep, LangAnnotations.from_dict(load_pickled_npy(lang_path), str(lang_path)), str(lang_path), runs,
                               eps)
        except CalvinFormatError as e:
            rep.problems += e.problems

    with os.scandir(split_dir) as it:
        present = {int(m.group(1)) for entry in it if (m := FRAME_RE.match(entry.name))}
    expected = set(np.concatenate([np.arange(s, e + 1) for s, e in runs]).tolist()) if len(runs) else set()
    rep.problems += [Problem(str(split_dir / t), "missing frame file") for t in _id_runs_text(sorted(expected - present))]
    stray = sorted(present - expected)
    if stray and eps is not None:
        rep.problems.append(Problem(str(split_dir), f"{len(stray)} frame files outside {EP_START_END}, first {FRAME_NAME.format(stray[0])}", severity="warning"))

    ids = sorted(expected & present)
    if sample is not None and sample < len(ids):
        ids = sorted(np.random.default_rng(0).choice(ids, size=sample, replace=False).tolist())
        rep.notes.append(f"contents checked on a random sample of {sample} frames")
    if quick:
        rep.notes.append("quick: images and depth checked by their headers only, not decompressed")
    values: dict[str, list[np.ndarray]] = {k: [] for k in ACTION_KEYS}
    for fid in tqdm(ids, desc=f"check {split_dir.name}", unit="frame", disable=not progress):
        _check_frame(rep, str(split_dir / FRAME_NAME.format(fid)), values, quick)
    rep.checked_frames = len(ids)
    for key, vs in values.items():
        if vs:
            rep.add_range(key, np.stack(vs))
    for key, shapes in rep.image_shapes.items():
        if len(shapes) > 1:
            rep.problems.append(Problem(str(split_dir), f"frames disagree on the shape: {dict(shapes)}", key))
        elif key in CALVIN_IMAGE_SHAPES and next(iter(shapes)) != CALVIN_IMAGE_SHAPES[key]:
            rep.notes.append(f"{key} is {next(iter(shapes))}, CALVIN's is {CALVIN_IMAGE_SHAPES[key]}")
    _check_side_files(rep, split_dir)
    return rep


def _check_episode_lengths(rep: CheckReport, lens_path: Path, eps: np.ndarray) -> None:
    if not lens_path.is_file():
        rep.problems.append(Problem(str(lens_path), "missing file", severity="warning"))
        return
    try:
        lens = np.load(lens_path, allow_pickle=False)
    except Exception as e:  # a damaged .npy raises ValueError, OSError, EOFError ...
        rep.problems.append(Problem(str(lens_path), f"cannot be loaded ({e})"))
        return
    if lens.shape != (len(eps),) or np.any(lens != eps[:, 1] - eps[:, 0] + 1):
        rep.problems.append(Problem(str(lens_path), f"does not match {EP_START_END} (end - start + 1)"))


def _check_side_files(rep: CheckReport, split_dir: Path) -> None:
    stats = split_dir / STATISTICS
    if not stats.is_file():
        rep.problems.append(Problem(str(stats), "missing file", severity="warning"))
    else:
        try:
            read_statistics(stats)
        except CalvinFormatError as e:
            rep.problems += e.problems
    for name in (SCENE_INFO, f"{LANG_DIR}/{EVAL_EMBEDDINGS}"):
        path = split_dir / name
        if path.is_file():
            try:
                if name == SCENE_INFO:
                    scenes = read_scene_info(path)
                    rep.notes.append(f"scene_info: {scenes}")
                    check_published_scenes(split_dir, scenes)
                else:
                    load_pickled_npy(path)
            except CalvinFormatError as e:
                rep.problems += e.problems


def check_shard_split(path: Path) -> CheckReport:
    rep = CheckReport(str(path), "shards")
    try:
        src = ShardFrameSource(path)
    except CalvinFormatError as e:
        rep.problems += e.problems
        return rep
    m = src.manifest  # its frame layout checked by ShardFrameSource
    rep.frames, rep.episodes = int(m["num_frames"]), len(m.get("episodes", []))
    try:
        episodes = np.asarray(m.get("episodes") or np.zeros((0, 2)), dtype=np.int64).reshape(-1, 2)
        _check_annotations(rep, src.lang, str(path / ANNOTATIONS), src.runs, episodes)
    except (CalvinFormatError, OSError, ValueError) as e:
        rep.problems += getattr(e, "problems", [Problem(str(path / ANNOTATIONS), f"cannot be read ({e})")])
    for j, sh in enumerate(m["shards"]):
        n = sh["rows"][1] - sh["rows"][0]
        for key, spec in src.keys.items():
            where = str(path / sh["dir"] / f"{key}.npy")
            try:
                a = src.array(j, key)
            except (OSError, ValueError) as e:
                rep.problems.append(Problem(where, f"cannot be mapped ({e})", key))
                continue
            want = (n, *spec["shape"])
            if a.shape != want or str(a.dtype) != spec["dtype"]:
                rep.problems.append(Problem(where, f"expected {spec['dtype']} {want}, got {a.dtype} {a.shape}", key))
                continue
            if key in VECTOR_KEYS:
                bad = ~np.isfinite(a).all(axis=1)
                if bad.any():
                    rep.problems.append(Problem(where, f"non-finite values in {int(bad.sum())} rows, first row {int(np.argmax(bad)) + sh['rows'][0]}", key))
                if key in ACTION_KEYS and (~bad).any():
                    rep.add_range(key, np.asarray(a[~bad]))
            elif n:
                rep.image_shapes.setdefault(key, Counter())[tuple(spec["shape"])] += n
    rep.checked_frames = rep.frames
    return rep


def check_path(path: str | Path, split: str | None = None, sample: int | None = None, progress: bool = False,
               quick: bool = False) -> list[CheckReport]:
    """Check a split folder, a dataset root (each split), or converted shards. Every member of every
    frame (or of `sample` random frames per split) is read; `quick` reads images and depth by header."""
    if sample is not None and sample < 1:
        raise ValueError(f"sample must be a number of frames >= 1 (or None for all), got {sample}")
    p = Path(path)
    if not p.exists():
        return [CheckReport(str(p), "?", [Problem(str(p), "does not exist")])]
    candidates = [p / split] if split else [p / s for s in SPLITS if (p / s).is_dir()] or [p]
    reports = []
    for d in candidates:
        if is_shard_dir(d):
            reports.append(check_shard_split(d))
        elif d.is_dir() and ((d / EP_START_END).is_file() or any(FRAME_RE.match(n) for n in os.listdir(d))):
            reports.append(check_npz_split(d, sample=sample, progress=progress, quick=quick))
        else:
            reports.append(CheckReport(str(d), "?", [Problem(str(d), f"neither a CALVIN split ({EP_START_END}, episode_*.npz) nor converted shards (manifest.json)")]))
    return reports


def summary_dict(rep: CheckReport) -> dict[str, Any]:
    return {
        "path": rep.path, "format": rep.format, "frames": rep.frames, "episodes": rep.episodes,
        "annotations_per_task": dict(rep.annotations_per_task),
        "action_ranges": {k: [lo.tolist(), hi.tolist()] for k, (lo, hi) in rep.action_ranges.items()},
        "image_shapes": {k: {str(s): n for s, n in v.items()} for k, v in rep.image_shapes.items()},
        "problems": [{"severity": p.severity, "where": p.where, "key": p.key, "message": p.message} for p in rep.problems],
    }
