"""A memory-mapped, sharded copy of a CALVIN split, for window loading without per-frame file opens.

Layout of a converted split (`convert` writes one per split of the source):

    <dst>/<split>/manifest.json       format, version, keys (dtype, shape), resized, runs, shards, episodes, scene_info
    <dst>/<split>/annotations.json    info.indx, language.ann, language.task, info.episodes (plain JSON)
    <dst>/<split>/annotations_emb.npy language.emb, when the source has it
    <dst>/<split>/shard_00000/<key>.npy   (rows, *shape) contiguous arrays: uint8 images, float32 vectors
    <dst>/<split>/statistics.yaml, lang_annotations/embeddings.npy   copied as they are, when present

Frames are stored as `runs` of contiguous frame ids; run k holds ids [first, last] at rows
row0 + (id - first). `frames="annotated"` stores only the frames inside language annotations (all
that windows read), which is much smaller for real CALVIN splits. `resize` stores camera images at a
smaller square size (the model's input size; `resized` in the manifest says from what and how). Nothing
here is pickled.

`ShardFrameSource` opens the .npy files with `np.load(mmap_mode="r")` lazily, on first read in each
process, and never pickles its maps: it works in DataLoader workers (fork or spawn) and with
`DistributedSampler`.
"""

from __future__ import annotations

import json
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
from tqdm import tqdm

from harness.data.calvin_format import (
    EVAL_EMBEDDINGS,
    LANG_DIR,
    SPLITS,
    STATISTICS,
    CalvinSplit,
    LangAnnotations,
    Problem,
    CalvinFormatError,
    merge_ranges,
    range_in_runs,
)
from harness.data.images import RESIZE_MODES, resize_hwc
from harness.durable_files import fsync_dir, sync_tree
from harness.folder_lock import killed_leftovers

SHARD_FORMAT = "vla-harness-shards"
SHARD_VERSION = 1
MANIFEST = "manifest.json"
ANNOTATIONS = "annotations.json"
ANNOTATION_EMB = "annotations_emb.npy"
DEFAULT_KEYS = ("rgb_static", "rgb_gripper", "actions", "rel_actions", "robot_obs", "scene_obs")
IMAGE_KEYS = ("rgb_static", "rgb_gripper")  # the camera images `resize` may store smaller


def directory_size(path: str | Path) -> int:
    """Bytes of all files below `path` (apparent sizes)."""
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def _id_list(runs: np.ndarray) -> np.ndarray:
    return np.concatenate([np.arange(s, e + 1) for s, e in runs] or [np.zeros(0)]).astype(np.int64)


def _write_shard(split_dir: str, shard_dir: str, frame_ids: Sequence[int], specs: dict[str, tuple[str, list[int]]],
                 resize: dict[str, int], resize_mode: str) -> int:
    """Fill one shard's arrays from the frame files (runs in a worker process); `resize`: key -> stored edge."""
    split = CalvinSplit(split_dir)
    out = Path(shard_dir)
    out.mkdir(parents=True)
    stored = {k: [resize[k], resize[k], 3] if k in resize else shape for k, (_, shape) in specs.items()}
    arrays = {
        k: np.lib.format.open_memmap(out / f"{k}.npy", mode="w+", dtype=np.dtype(dt), shape=(len(frame_ids), *stored[k]))
        for k, (dt, _) in specs.items()
    }
    for row, fid in enumerate(frame_ids):
        frame = split.load_frame(int(fid), specs)
        for k, v in frame.items():
            if list(v.shape) != specs[k][1]:
                raise CalvinFormatError([Problem(str(split.frame_path(fid)), f"shape {v.shape} differs from the split's {specs[k][1]}", k)])
            arrays[k][row] = resize_hwc(v, resize[k], resize_mode) if k in resize else v
    for a in arrays.values():
        a.flush()
    return len(frame_ids)


def convert_split(
    src: CalvinSplit,
    dst: str | Path,
    *,
    keys: Sequence[str] = DEFAULT_KEYS,
    frames: str = "all",
    resize: Mapping[str, int] | None = None,
    resize_mode: str = "bicubic",
    shard_frames: int = 2048,
    workers: int = 1,
    progress: bool = True,
    resume: bool = False,
) -> dict[str, Any]:
    """Convert one split; writes into a temporary folder, synced to disk, and renames it to `dst` when complete
    (so a `dst` with a manifest is whole, even after a crash).

    `resize` maps image keys to the square edge they are stored at (e.g. {"rgb_static": 96}), resized
    by `harness.data.images.resize_frames` in `resize_mode`, as the model's processor would at its input
    size (the VLA backbones use the same function, and skip the resize for frames already that size).
    `resume`: a `dst` already converted from the same source with the same settings is kept (the result says
    `"kept": True`), one converted otherwise is an error naming what differs, and the temporary folders of
    conversions killed before their rename are removed."""
    dst = Path(dst)
    if dst.exists() and not resume:
        raise FileExistsError(f"{dst} exists; remove it, choose another destination, or resume (--resume) to keep "
                              "a split converted with the same settings")
    if frames not in ("all", "annotated"):
        raise ValueError(f"frames must be 'all' or 'annotated', got {frames!r}")
    if shard_frames < 1:
        raise ValueError(f"shard_frames must be at least 1, got {shard_frames}")
    resize = _check_resize(resize or {}, keys, resize_mode)
    lang = src.lang
    for i, (s, e) in enumerate(lang.indx):
        if not src.has_range(int(s), int(e)):
            raise CalvinFormatError([Problem(str(src.lang_path), f"entry {i} covers frames [{s}, {e}] outside the split's frames", "info.indx")])
    runs = src.runs if frames == "all" else merge_ranges(lang.indx)
    ids = _id_list(runs)
    if len(ids) == 0:
        raise ValueError(f"{src.path}: no frames to convert")
    probe = src.load_frame(int(ids[0]), keys)
    specs = {k: ("uint8" if v.dtype == np.uint8 else "float32", list(v.shape)) for k, v in probe.items()}
    scene_info = src.scene_info()  # a refused label (an old task_D_D copy's) stops here, before any shard is written
    result = {"split": src.path.name, "frames": int(len(ids))}
    if resume:
        _remove_killed_conversions(dst)
        if dst.exists():
            _check_same_conversion(dst, src, frames, runs, lang, specs, scene_info, resize, resize_mode)
            return {**result, "shards": len(load_manifest(dst)["shards"]), "bytes": directory_size(dst), "kept": True}

    tmp = dst.parent / f".{dst.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        _write_split(src, tmp, ids, runs, lang, specs, scene_info, frames=frames, resize=resize,
                     resize_mode=resize_mode, shard_frames=shard_frames, workers=workers, progress=progress)
        sync_tree(tmp)  # every shard on disk before the name says the split is complete
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    os.replace(tmp, dst)
    fsync_dir(dst.parent)
    return {**result, "shards": len(load_manifest(dst)["shards"]), "bytes": directory_size(dst)}


def _remove_killed_conversions(dst: Path) -> None:
    """The temporary folders that conversions into `dst` left when killed before their rename (a folder whose
    process still runs on this machine is another conversion's, and stays; one named with this process's pid is an
    earlier process's, as a process converts a split once)."""
    for partial in [*killed_leftovers(dst.parent, f".{dst.name}.partial-*"), dst.parent / f".{dst.name}.partial-{os.getpid()}"]:
        shutil.rmtree(partial, ignore_errors=True)


def _stored_keys(specs: dict[str, tuple[str, list[int]]], resize: dict[str, int]) -> dict[str, dict[str, Any]]:
    """The manifest's `keys`: each key's dtype and stored shape."""
    return {k: {"dtype": dt, "shape": [resize[k], resize[k], 3] if k in resize else shape} for k, (dt, shape) in specs.items()}


def _resized(specs: dict[str, tuple[str, list[int]]], resize: dict[str, int], mode: str) -> dict[str, dict[str, Any]]:
    """The manifest's `resized`: the source shape and interpolation of each resized key."""
    return {k: {"from": specs[k][1], "mode": mode} for k in resize}


def _annotations(lang: LangAnnotations) -> dict[str, Any]:
    """annotations.json's content."""
    return {"indx": lang.indx.tolist(), "ann": lang.ann, "task": lang.task, "episodes": lang.episodes}


def _as_json(value: Any) -> Any:
    """`value` as it reads back from JSON (tuples as lists, numpy scalars as numbers)."""
    return json.loads(json.dumps(value, default=lambda x: x.item() if isinstance(x, np.generic) else x.tolist()))


def _check_same_conversion(dst: Path, src: CalvinSplit, frames: str, runs: np.ndarray, lang: LangAnnotations,
                           specs: dict[str, tuple[str, list[int]]], scene_info: dict[str, list[int]] | None,
                           resize: dict[str, int], resize_mode: str) -> None:
    """A converted split that a resumed conversion keeps must hold what this one would write: the same source,
    frames, keys and sizes, annotations, episodes, scene labels and side files (the frames' pixels are not read
    again). Else the error names every difference; a folder that is not a converted split is refused too."""
    if not is_shard_dir(dst):
        raise FileExistsError(f"{dst} exists and is not a converted split (no {MANIFEST}); remove it or choose another destination")
    m = load_manifest(dst)
    shown = {"source": str(src.path.resolve()), "frames": frames, "keys": _stored_keys(specs, resize),
             "resized": _resized(specs, resize, resize_mode)}
    named = {"runs (frame ids)": (runs.tolist(), [[s, e] for s, e, *_ in m.get("runs", [])]),
             "episodes": (_as_json(src.episodes.tolist()), m.get("episodes")),
             "scene_info": (_as_json(scene_info), m.get("scene_info")),
             "annotations": (_as_json(_annotations(lang)), _read_json(dst / ANNOTATIONS)),
             "annotation embeddings": (lang.emb, _read_array(dst / ANNOTATION_EMB)),
             STATISTICS: (_read_bytes(src.path / STATISTICS), _read_bytes(dst / STATISTICS)),
             f"{LANG_DIR}/{EVAL_EMBEDDINGS}": (_read_bytes(src.path / LANG_DIR / EVAL_EMBEDDINGS),
                                               _read_bytes(dst / LANG_DIR / EVAL_EMBEDDINGS))}
    differ = [f"{k}: {m.get(k)} there, {v} now" for k, v in shown.items() if m.get(k) != v]
    differ += [k for k, (now, there) in named.items() if not _same(now, there)]
    if differ:
        raise ValueError(f"{dst} was converted otherwise; remove it to convert it again: " + "; ".join(differ))


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return a is not None and b is not None and a.shape == b.shape and bool(np.array_equal(a, b))
    return a == b


def _read_json(path: Path) -> Any:
    return _read_converted(path, lambda: json.loads(path.read_text()))


def _read_array(path: Path) -> np.ndarray | None:
    return _read_converted(path, lambda: np.load(path, allow_pickle=False))


def _read_converted(path: Path, load: Callable[[], Any]) -> Any:
    """A converted split's file (None where it has none); a damaged one is named, with what to do."""
    try:
        return load() if path.is_file() else None
    except (ValueError, OSError, EOFError) as e:
        raise ValueError(f"{path} cannot be read ({e}): remove {path.parent} to convert it again") from None


def _read_bytes(path: Path) -> bytes | None:
    return path.read_bytes() if path.is_file() else None


def _write_split(src: CalvinSplit, tmp: Path, ids: np.ndarray, runs: np.ndarray, lang: LangAnnotations,
                 specs: dict[str, tuple[str, list[int]]], scene_info: dict[str, list[int]] | None, *, frames: str,
                 resize: dict[str, int], resize_mode: str, shard_frames: int, workers: int, progress: bool) -> None:
    """The shards, annotations, side files and manifest of a converted split, into the folder `tmp`."""
    bounds = list(range(0, len(ids), shard_frames)) + [len(ids)]
    shards = [{"dir": f"shard_{j:05d}", "rows": [bounds[j], bounds[j + 1]]} for j in range(len(bounds) - 1)]
    jobs = [(str(src.path), str(tmp / sh["dir"]), ids[sh["rows"][0] : sh["rows"][1]].tolist(), specs, resize, resize_mode)
            for sh in shards]
    with tqdm(total=len(ids), unit="frame", desc=f"convert {src.path.name}", disable=not progress) as bar:
        if workers > 1:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for n in pool.map(_write_shard, *zip(*jobs)):
                    bar.update(n)
        else:
            for job in jobs:
                bar.update(_write_shard(*job))

    (tmp / ANNOTATIONS).write_text(json.dumps(_annotations(lang)))
    if lang.emb is not None:
        np.save(tmp / ANNOTATION_EMB, lang.emb)
    if (src.path / STATISTICS).is_file():
        shutil.copy2(src.path / STATISTICS, tmp / STATISTICS)
    if (src.path / LANG_DIR / EVAL_EMBEDDINGS).is_file():  # copied as bytes, never unpickled here
        (tmp / LANG_DIR).mkdir()
        shutil.copy2(src.path / LANG_DIR / EVAL_EMBEDDINGS, tmp / LANG_DIR / EVAL_EMBEDDINGS)
    row0 = np.concatenate([[0], np.cumsum(runs[:, 1] - runs[:, 0] + 1)[:-1]])
    manifest = {
        "format": SHARD_FORMAT,
        "version": SHARD_VERSION,
        "source": str(src.path.resolve()),
        "frames": frames,
        "num_frames": int(len(ids)),
        "keys": _stored_keys(specs, resize),
        "resized": _resized(specs, resize, resize_mode),
        "runs": [[int(s), int(e), int(r)] for (s, e), r in zip(runs, row0)],
        "shards": shards,
        "episodes": src.episodes.tolist(),
        "scene_info": scene_info,
    }
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))


def _check_resize(resize: Mapping[str, int], keys: Sequence[str], mode: str) -> dict[str, int]:
    for key, edge in resize.items():
        if key not in IMAGE_KEYS:
            raise ValueError(f"resize: {key!r} is not an image key (image keys: {', '.join(IMAGE_KEYS)})")
        if key not in keys:
            raise ValueError(f"resize: {key!r} is not among the converted keys {list(keys)}")
        if isinstance(edge, bool) or not isinstance(edge, (int, np.integer)) or edge < 1:
            raise ValueError(f"resize: the edge of {key!r} must be a positive integer, got {edge!r}")
    if resize and mode not in RESIZE_MODES:
        raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {mode!r}")
    return {k: int(v) for k, v in resize.items()}


def convert(src: str | Path, dst: str | Path, *, splits: Iterable[str] | None = None, **kw: Any) -> list[dict[str, Any]]:
    """Convert a dataset root (every split present, or `splits`) or a single split folder."""
    src, dst = Path(src), Path(dst)
    names = list(splits) if splits is not None else [s for s in SPLITS if (src / s).is_dir()]
    if not names:
        return [convert_split(CalvinSplit(src), dst, **kw)]
    missing = [s for s in names if not (src / s).is_dir()]
    if len(names) > 1 and missing:  # a split folder stands for any split name: each would get the same frames
        raise ValueError(f"{src} has no {' or '.join(repr(s) for s in missing)} folder: it is a split folder (one "
                         f"split), and converting it as {names} would write the same frames under each name (validation "
                         "on the training frames); give the dataset root, or one split")
    dst.mkdir(parents=True, exist_ok=True)
    fsync_dir(dst.parent)
    return [convert_split(CalvinSplit(src, s), dst / s, **kw) for s in names]


def is_shard_dir(path: str | Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def resolve_shard_dir(path: str | Path, split: str | None = None) -> Path:
    p = Path(path)
    if split is not None and is_shard_dir(p / split):
        return p / split
    if is_shard_dir(p):
        return p
    raise CalvinFormatError([Problem(str(p / (split or "") / MANIFEST), "missing file: not a converted (sharded) split")])


def load_manifest(path: Path) -> dict[str, Any]:
    where = str(path / MANIFEST)
    try:
        m = json.loads((path / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CalvinFormatError([Problem(where, f"cannot be read ({e})")]) from None
    if not isinstance(m, dict) or m.get("format") != SHARD_FORMAT or m.get("version") != SHARD_VERSION:
        got = f"{m.get('format')!r} {m.get('version')!r}" if isinstance(m, dict) else type(m).__name__
        raise CalvinFormatError([Problem(where, f"expected format {SHARD_FORMAT!r} version {SHARD_VERSION}, got {got}")])
    missing = [k for k in ("num_frames", "keys", "runs", "shards") if k not in m]
    if missing:
        raise CalvinFormatError([Problem(where, f"missing {', '.join(missing)}")])
    return m


def _layout_problem(runs: np.ndarray, row0: np.ndarray, shard_rows: np.ndarray, num_frames: int) -> str | None:
    """What is wrong with a manifest's frame layout: runs must be sorted, disjoint, each stored right after the
    one before; shards must tile the rows [0, num_frames) in order. None when it holds."""
    lengths = runs[:, 1] - runs[:, 0] + 1
    if np.any(lengths < 1) or np.any(runs[1:, 0] <= runs[:-1, 1]):
        return "runs are not sorted, disjoint [first, last] frame ids"
    if np.any(row0 != np.concatenate([[0], np.cumsum(lengths)[:-1]])) or lengths.sum() != num_frames:
        return f"the runs' rows are not stored one after another, {num_frames} frames in all"
    edges = shard_rows.reshape(-1)
    if len(shard_rows) and (edges[0] != 0 or edges[-1] != num_frames or np.any(np.diff(edges) < 0)
                            or np.any(shard_rows[1:, 0] != shard_rows[:-1, 1])):
        return f"the shards' rows do not tile [0, {num_frames})"
    if not len(shard_rows) and num_frames:
        return "no shards"
    return None


class ShardFrameSource:
    """Frames of a converted split, read as slices of memory-mapped arrays."""

    def __init__(self, path: str | Path, split: str | None = None):
        self.path = resolve_shard_dir(path, split)
        self.name = str(self.path)
        self.manifest = m = load_manifest(self.path)
        try:
            table = np.asarray(m["runs"], dtype=np.int64).reshape(-1, 3)
            self._shard_rows = np.asarray([sh["rows"] for sh in m["shards"]], dtype=np.int64).reshape(-1, 2)
            [sh["dir"] for sh in m["shards"]]
            problem = _layout_problem(table[:, :2], table[:, 2], self._shard_rows, int(m["num_frames"]))
        except (TypeError, ValueError, KeyError) as e:
            problem = f"runs, shards or num_frames malformed ({type(e).__name__}: {e})"
        if problem:  # a manifest that lies would hand out other frames than asked for
            raise CalvinFormatError([Problem(str(self.path / MANIFEST), problem)])
        self._runs, self._row0 = table[:, :2], table[:, 2]
        self._maps: dict[tuple[int, str], np.ndarray] = {}
        self._lang: LangAnnotations | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_maps"] = {}  # each process maps the files itself
        return state

    @property
    def runs(self) -> np.ndarray:
        return self._runs

    @property
    def keys(self) -> dict[str, dict[str, Any]]:
        return self.manifest["keys"]

    @property
    def scene_info(self) -> dict[str, list[int]] | None:
        return self.manifest.get("scene_info")

    @property
    def lang_where(self) -> str:
        return str(self.path / ANNOTATIONS)

    @property
    def lang(self) -> LangAnnotations:
        if self._lang is None:
            try:
                d = json.loads((self.path / ANNOTATIONS).read_text())
            except (OSError, ValueError) as e:
                raise CalvinFormatError([Problem(self.lang_where, f"cannot be read ({e})")]) from None
            missing = [k for k in ("indx", "ann", "task") if not isinstance(d, dict) or k not in d]
            if missing:
                raise CalvinFormatError([Problem(self.lang_where, f"missing {', '.join(missing)}")])
            emb_path = self.path / ANNOTATION_EMB
            try:
                emb = np.load(emb_path, allow_pickle=False) if emb_path.is_file() else None
            except (OSError, ValueError, EOFError) as e:
                raise CalvinFormatError([Problem(str(emb_path), f"cannot be loaded ({e})")]) from None
            raw = {"info": {"indx": d["indx"], "episodes": d.get("episodes")}, "language": {"ann": d["ann"], "task": d["task"]}}
            if emb is not None:
                raw["language"]["emb"] = emb
            self._lang = LangAnnotations.from_dict(raw, self.lang_where)
        return self._lang

    def array(self, shard: int, key: str) -> np.ndarray:
        m = self._maps.get((shard, key))
        if m is None:
            path = self.path / self.manifest["shards"][shard]["dir"] / f"{key}.npy"
            if key not in self.keys:
                raise KeyError(f"{self.path}: key {key!r} was not converted (converted: {sorted(self.keys)})")
            try:
                m = np.load(path, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError, EOFError) as e:  # missing, truncated, not an .npy
                raise CalvinFormatError([Problem(str(path), f"cannot be mapped ({e})", key)]) from None
            self._maps[(shard, key)] = m
        return m

    def rows(self, start: int, stop: int) -> tuple[int, int]:
        """Rows of frame ids [start, stop), which must be one contiguous stored run."""
        if not range_in_runs(self._runs, start, stop - 1):
            raise KeyError(f"{self.path}: frames [{start}, {stop - 1}] are not stored contiguously")
        k = int(np.searchsorted(self._runs[:, 0], start, side="right")) - 1
        r0 = int(self._row0[k] + start - self._runs[k, 0])
        return r0, r0 + stop - start

    def read(self, ranges: dict[str, tuple[int, int]]) -> dict[str, np.ndarray]:
        """Arrays of frames [start, stop) per key; read-only views of the maps where a range is in one shard."""
        out = {}
        for key, (a, b) in ranges.items():
            r0, r1 = self.rows(a, b)
            j = int(np.searchsorted(self._shard_rows[:, 0], r0, side="right")) - 1
            pieces = []
            while r0 < r1:
                lo, hi = self._shard_rows[j]
                end = min(r1, int(hi))
                pieces.append(self.array(j, key)[r0 - lo : end - lo])
                r0, j = end, j + 1
            # one piece: a read-only view of the map (the window dataset copies or shifts it once)
            out[key] = np.concatenate(pieces) if len(pieces) > 1 else pieces[0].view(np.ndarray)
        return out
