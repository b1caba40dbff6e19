"""CALVIN's on-disk dataset format: the frame spec, problems, language annotations and a split reader.

A CALVIN dataset is a folder with `training/` and `validation/` splits (see docs/CALVIN.md#dataset-layout):

    <split>/episode_0358482.npz ...          one frame per file, 7-digit global frame id; ids need not
                                             start at 0 and jump between recorded episodes
    <split>/ep_start_end_ids.npy             (N, 2) int, inclusive [start, end] frame ids of each episode
    <split>/ep_lens.npy                      (N,) int, end - start + 1
    <split>/scene_info.npy                   pickled dict scene name -> [first, last] frame id (optional;
                                             real CALVIN has it in training only, describing both splits)
    <split>/statistics.yaml                  mean/std of robot_obs, scene_obs; action bounds
    <split>/lang_annotations/auto_lang_ann.npy   pickled dict, see `LangAnnotations`
    validation/lang_annotations/embeddings.npy   optional, per-task eval embeddings

`auto_lang_ann.npy`, `scene_info.npy` and `embeddings.npy` are pickled by CALVIN itself; they are read
by `safe_pickle.load_npy`, which rebuilds only plain containers, numbers, strings and numpy arrays and
refuses anything that could run code. Frame files are read with `allow_pickle=False`.

Real CALVIN frames store the vector keys as float64 although the docs say float32, so the reader
accepts any float dtype and returns float32. Image sizes are not fixed by the reader (only rank and
channels are); the sizes CALVIN uses are in `CALVIN_IMAGE_SHAPES`.

Everything that can go wrong is a `Problem` naming the file and key; the reader raises the first one
as `CalvinFormatError` (a ValueError), the `check` command collects them all.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
import zlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import yaml

from harness.data.safe_pickle import RefusedGlobal, load_npy

FRAME_NAME = "episode_{:07d}.npz"
FRAME_RE = re.compile(r"^episode_(\d+)\.npz$")
EP_START_END = "ep_start_end_ids.npy"
EP_LENS = "ep_lens.npy"
SCENE_INFO = "scene_info.npy"
STATISTICS = "statistics.yaml"
LANG_DIR = "lang_annotations"
LANG_FILE = "auto_lang_ann.npy"
EVAL_EMBEDDINGS = "embeddings.npy"
SPLITS = ("training", "validation")


@dataclass(frozen=True)
class KeySpec:
    """What a frame key must hold: `kind` 'uint8' or 'float'; None in `shape` means any size."""

    kind: str
    shape: tuple[int | None, ...]

    def mismatch(self, dtype: np.dtype, shape: tuple[int, ...]) -> str | None:
        if self.kind == "uint8" and dtype != np.uint8:
            return f"expected dtype uint8, got {dtype}"
        if self.kind == "float" and dtype.kind != "f":
            return f"expected a float dtype, got {dtype}"
        if len(shape) != len(self.shape) or any(w is not None and w != s for w, s in zip(self.shape, shape)):
            want = "(" + ", ".join("H" if w is None else str(w) for w in self.shape) + ")"
            return f"expected shape {want}, got {tuple(shape)}"
        return None


VECTOR_KEYS = ("actions", "rel_actions", "robot_obs", "scene_obs")
FRAME_KEYS: dict[str, KeySpec] = {
    "actions": KeySpec("float", (7,)),
    "rel_actions": KeySpec("float", (7,)),
    "robot_obs": KeySpec("float", (15,)),
    "scene_obs": KeySpec("float", (24,)),
    "rgb_static": KeySpec("uint8", (None, None, 3)),
    "rgb_gripper": KeySpec("uint8", (None, None, 3)),
    "depth_static": KeySpec("float", (None, None)),
    "depth_gripper": KeySpec("float", (None, None)),
}
OPTIONAL_FRAME_KEYS: dict[str, KeySpec] = {
    "rgb_tactile": KeySpec("uint8", (None, None, 6)),
    "depth_tactile": KeySpec("float", (None, None, 2)),
}
ALL_FRAME_KEYS = {**FRAME_KEYS, **OPTIONAL_FRAME_KEYS}
CALVIN_IMAGE_SHAPES = {
    "rgb_static": (200, 200, 3),
    "rgb_gripper": (84, 84, 3),
    "depth_static": (200, 200),
    "depth_gripper": (84, 84),
    "rgb_tactile": (160, 120, 6),
    "depth_tactile": (160, 120, 2),
}


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a dataset, named by file (and key where there is one)."""

    where: str
    message: str
    key: str | None = None
    severity: str = "error"  # "error" fails `check`; "warning" is only reported

    def __str__(self) -> str:
        key = f" [{self.key}]" if self.key else ""
        return f"{self.where}{key}: {self.message}"


class CalvinFormatError(ValueError):
    """A dataset does not match CALVIN's format; `problems` holds every problem that was found."""

    def __init__(self, problems: Sequence[Problem]):
        self.problems = list(problems)
        more = f" (and {len(self.problems) - 1} more problems)" if len(self.problems) > 1 else ""
        super().__init__(f"{self.problems[0]}{more}")

    def __reduce__(self) -> tuple[Any, ...]:  # raised in a worker process (convert --workers N): rebuilt whole
        return type(self), (self.problems,)


def frame_key_problems(where: str, key: str, dtype: np.dtype, shape: tuple[int, ...]) -> list[Problem]:
    spec = ALL_FRAME_KEYS.get(key)
    msg = spec.mismatch(np.dtype(dtype), tuple(shape)) if spec else None
    return [Problem(where, msg, key)] if msg else []


def frame_value_problems(where: str, key: str, value: np.ndarray) -> list[Problem]:
    """Value checks on a loaded vector key: finite; relative actions in [-1, 1]; gripper exactly +-1."""
    if not np.all(np.isfinite(value)):
        return [Problem(where, f"non-finite values {value.tolist()}", key)]
    problems = []
    if key == "rel_actions" and np.any(np.abs(value[:6]) > 1.0 + 1e-6):
        problems.append(Problem(where, f"relative arm action outside [-1, 1]: {value[:6].tolist()}", key))
    if key in ("actions", "rel_actions") and value.shape == (7,) and value[6] not in (-1.0, 1.0):
        problems.append(Problem(where, f"gripper action must be -1 or 1, got {value[6]}", key))
    return problems


# what reading a damaged or crafted npz member raises: MemoryError for a header declaring an absurd shape (numpy
# allocates it before reading), NotImplementedError for a compression method zipfile does not know
UNREADABLE_MEMBER = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, MemoryError, NotImplementedError)


def read_member(zf: zipfile.ZipFile, key: str, where: str) -> np.ndarray:
    """One array of an open npz, read to the member's end, where zip checks its CRC-32. A damaged member
    is a CalvinFormatError naming the frame file and the key."""
    try:
        with zf.open(f"{key}.npy") as f:
            arr = np.lib.format.read_array(f, allow_pickle=False)
            f.read()
    except UNREADABLE_MEMBER as e:
        raise CalvinFormatError([Problem(where, f"unreadable npz member ({type(e).__name__}: {e})", key)]) from None
    return arr


def read_member_header(zf: zipfile.ZipFile, key: str, where: str) -> tuple[np.dtype, tuple[int, ...]]:
    """dtype and shape of one array of an open npz, decompressing only its npy header."""
    try:
        with zf.open(f"{key}.npy") as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read(f)
    except UNREADABLE_MEMBER as e:
        raise CalvinFormatError([Problem(where, f"unreadable npz member ({type(e).__name__}: {e})", key)]) from None
    return dtype, shape


def open_frame(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except FileNotFoundError:
        raise CalvinFormatError([Problem(str(path), "missing frame file")]) from None
    except (zipfile.BadZipFile, OSError) as e:
        raise CalvinFormatError([Problem(str(path), f"not a readable npz file ({e})")]) from None


def frame_keys(zf: zipfile.ZipFile) -> list[str]:
    return [n[:-4] for n in zf.namelist() if n.endswith(".npy")]


def read_frame(path: Path, keys: Iterable[str]) -> dict[str, np.ndarray]:
    """Load `keys` of one frame file, checked against the spec; floats come back as float32."""
    out: dict[str, np.ndarray] = {}
    where = str(path)
    with open_frame(path) as zf:
        present = frame_keys(zf)
        for key in keys:
            if key not in present:
                raise CalvinFormatError([Problem(where, f"missing key (present: {sorted(present)})", key)])
            arr = read_member(zf, key, where)
            problems = frame_key_problems(where, key, arr.dtype, arr.shape)
            if not problems and key in VECTOR_KEYS:
                problems = frame_value_problems(where, key, arr)
            if problems:
                raise CalvinFormatError(problems)
            out[key] = arr.astype(np.float32, copy=False) if arr.dtype.kind == "f" else arr
    return out


def rel_actions_from_absolute(actions: np.ndarray, robot_obs: np.ndarray) -> np.ndarray:
    """CALVIN's relative action from the absolute TCP target and the current state.

    Position: (target - tcp) * 50; euler: (target - tcp) wrapped to [-pi, pi] * 20; both clipped to
    [-1, 1]. The gripper (+-1) is copied. Works on (..., 7) actions with (..., 15) robot_obs.
    """
    a = np.asarray(actions, dtype=np.float64)
    s = np.asarray(robot_obs, dtype=np.float64)
    if a.shape[-1] != 7 or s.shape[-1] != 15 or a.shape[:-1] != s.shape[:-1]:
        raise ValueError(f"expected actions (..., 7) and robot_obs (..., 15), got {a.shape} and {s.shape}")
    rel = np.empty(a.shape, dtype=np.float32)
    rel[..., :3] = np.clip((a[..., :3] - s[..., :3]) * 50.0, -1.0, 1.0)
    dorn = (a[..., 3:6] - s[..., 3:6] + np.pi) % (2 * np.pi) - np.pi
    rel[..., 3:6] = np.clip(dorn * 20.0, -1.0, 1.0)
    rel[..., 6] = a[..., 6]
    return rel


def merge_ranges(ranges: np.ndarray) -> np.ndarray:
    """Inclusive (start, end) ranges -> sorted maximal runs of contiguous ids, (M, 2) int64."""
    r = np.asarray(ranges, dtype=np.int64).reshape(-1, 2)
    if len(r) == 0:
        return r
    r = r[np.argsort(r[:, 0], kind="stable")]
    runs = [list(r[0])]
    for s, e in r[1:]:
        if s <= runs[-1][1] + 1:
            runs[-1][1] = max(runs[-1][1], e)
        else:
            runs.append([s, e])
    return np.asarray(runs, dtype=np.int64)


def range_in_runs(runs: np.ndarray, start: int, end: int) -> bool:
    """True when every id in [start, end] lies inside one of the sorted contiguous `runs`."""
    k = int(np.searchsorted(runs[:, 0], start, side="right")) - 1
    return k >= 0 and end <= runs[k, 1] and start <= end


@dataclass
class LangAnnotations:
    """CALVIN's `auto_lang_ann.npy`: one entry per language-annotated segment.

    On disk: {"info": {"indx": [(start, end), ...] inclusive frame ids, "episodes": [...]},
              "language": {"ann": [str], "task": [str], "emb": (N, 1, D) float (optional)}}
    """

    indx: np.ndarray  # (N, 2) int64, inclusive
    ann: list[str]
    task: list[str]
    emb: np.ndarray | None = None  # (N, 1, D) float32
    episodes: list[Any] | None = None  # info.episodes as stored (this project: episode index per entry)

    def __len__(self) -> int:
        return len(self.ann)

    @classmethod
    def from_dict(cls, d: Any, where: str) -> "LangAnnotations":
        problems = []
        if not isinstance(d, dict) or not isinstance(d.get("info"), dict) or not isinstance(d.get("language"), dict):
            raise CalvinFormatError([Problem(where, "expected a dict with 'info' and 'language' dicts")])
        info, lang = d["info"], d["language"]
        for sect, key in (("info", "indx"), ("language", "ann"), ("language", "task")):
            if key not in d[sect]:
                problems.append(Problem(where, "missing key", f"{sect}.{key}"))
        if problems:
            raise CalvinFormatError(problems)
        try:
            indx = np.asarray(info["indx"])
        except ValueError:  # rows of different lengths
            raise CalvinFormatError([Problem(where, "expected (N, 2) integer frame ids, got rows of different lengths",
                                             "info.indx")]) from None
        episodes = info.get("episodes")
        for key, value in (("language.ann", lang["ann"]), ("language.task", lang["task"]), ("info.episodes", episodes)):
            if not (_is_sequence(value) or key == "info.episodes" and value is None):
                raise CalvinFormatError([Problem(where, f"expected a list, got {type(value).__name__}", key)])
        ann, task = [str(a) for a in lang["ann"]], [str(t) for t in lang["task"]]
        if indx.size == 0:  # an empty list loads as float64
            indx = np.zeros((0, 2), dtype=np.int64)
        if indx.ndim != 2 or indx.shape[1] != 2 or indx.dtype.kind not in "iu":
            problems.append(Problem(where, f"expected (N, 2) integer frame ids, got {indx.shape} {indx.dtype}", "info.indx"))
        elif np.any(indx[:, 0] > indx[:, 1]):
            bad = int(np.argmax(indx[:, 0] > indx[:, 1]))
            problems.append(Problem(where, f"entry {bad} starts after it ends: {indx[bad].tolist()}", "info.indx"))
        for key, values in (("language.ann", ann), ("language.task", task)):
            if len(values) != len(indx):
                problems.append(Problem(where, f"{len(values)} entries but info.indx has {len(indx)}", key))
        emb = lang.get("emb")
        # CALVIN's annotator starts `emb` as [] and may leave it so: no embeddings (the training reads none)
        if _is_sequence(emb) and len(emb) == 0 and len(indx) > 0:
            emb = None
        if emb is not None:
            try:
                emb = np.asarray(emb)
            except ValueError:  # rows of different lengths
                emb = np.asarray(None)
            if emb.ndim == 2:
                emb = emb[:, None, :]
            if emb.ndim != 3 or emb.shape[0] != len(indx) or emb.shape[1] != 1 or emb.dtype.kind != "f":
                problems.append(Problem(where, f"expected ({len(indx)}, 1, D) floats, got {emb.shape} {emb.dtype}", "language.emb"))
            else:
                emb = emb.astype(np.float32, copy=False)
        if episodes is not None:  # numpy arrays and scalars as plain values: written back as JSON too (shards)
            episodes = _json_plain(episodes)
            try:
                json.dumps(episodes)
            except (TypeError, ValueError) as e:
                problems.append(Problem(where, f"cannot be written as JSON ({e})", "info.episodes"))
        if problems:
            raise CalvinFormatError(problems)
        return cls(indx.astype(np.int64), ann, task, emb, episodes)

    def to_dict(self) -> dict[str, Any]:
        language: dict[str, Any] = {"ann": list(self.ann), "task": list(self.task)}
        if self.emb is not None:
            language["emb"] = np.asarray(self.emb, dtype=np.float32)
        info = {"indx": [(int(s), int(e)) for s, e in self.indx], "episodes": list(self.episodes or [])}
        return {"info": info, "language": language}

    def select(self, keep: np.ndarray) -> "LangAnnotations":
        keep = np.asarray(keep, dtype=np.int64)
        return LangAnnotations(
            self.indx[keep],
            [self.ann[i] for i in keep],
            [self.task[i] for i in keep],
            None if self.emb is None else self.emb[keep],
            None if self.episodes is None or len(self.episodes) != len(self) else [self.episodes[i] for i in keep],
        )


def lang_annotation_path(split_dir: Path) -> Path | None:
    """CALVIN's location, with the fallback some copies use (the file directly in the split)."""
    for p in (split_dir / LANG_DIR / LANG_FILE, split_dir / LANG_FILE):
        if p.is_file():
            return p
    return None


def _json_plain(value: Any) -> Any:
    """numpy arrays as lists and numpy scalars as Python ones, inside lists, tuples and dicts too."""
    if isinstance(value, np.ndarray):
        return _json_plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_json_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_plain(v) for k, v in value.items()}
    return value


def _is_sequence(value: Any) -> bool:
    """A list, tuple or array (what CALVIN's pickled lists come as), not a string or a scalar."""
    return isinstance(value, (list, tuple, np.ndarray))


def load_pickled_npy(path: Path) -> dict[Any, Any]:
    """Load one of CALVIN's pickled-dict .npy files with the restricted unpickler (nothing runs)."""
    try:
        array = load_npy(path)
    except RefusedGlobal as e:
        raise CalvinFormatError([Problem(str(path), str(e))]) from None
    except Exception as e:  # a corrupt pickle can raise nearly anything
        raise CalvinFormatError([Problem(str(path), f"cannot be loaded as a pickled dict ({type(e).__name__}: {e})")]) from None
    value = array.item() if array.shape == () else None
    if not isinstance(value, dict):
        got = type(value).__name__ if array.shape == () else f"an array of shape {array.shape}"
        raise CalvinFormatError([Problem(str(path), f"expected a pickled dict, got {got}")])
    return value


def read_episode_bounds(split_dir: Path) -> tuple[np.ndarray | None, list[Problem]]:
    """ep_start_end_ids.npy as stored, (N, 2) int64, and every problem with it: each episode that starts
    after it ends, each pair that overlaps. None when the file is missing, unreadable or not (N, 2) ints."""
    path = split_dir / EP_START_END
    where = str(path)
    if not path.is_file():
        return None, [Problem(where, "missing file (every CALVIN split has one)")]
    try:
        eps = np.load(path, allow_pickle=False)
    except Exception as e:  # a damaged .npy raises ValueError, OSError, EOFError ...
        return None, [Problem(where, f"cannot be loaded ({e})")]
    if eps.size == 0:
        eps = eps.reshape(0, 2)
    if eps.ndim != 2 or eps.shape[1] != 2 or eps.dtype.kind not in "iu":
        return None, [Problem(where, f"expected (N, 2) integer frame ids, got {eps.shape} {eps.dtype}")]
    eps = eps.astype(np.int64)
    problems = [Problem(where, f"episode {i} starts after it ends: {eps[i].tolist()}")
                for i in np.flatnonzero(eps[:, 0] > eps[:, 1])]
    ordered = eps[np.argsort(eps[:, 0], kind="stable")]
    reach = None  # the episode reaching furthest so far
    for ep in ordered[ordered[:, 0] <= ordered[:, 1]]:
        if reach is not None and ep[0] <= reach[1]:
            problems.append(Problem(where, f"episodes overlap: {reach.tolist()} and {ep.tolist()}"))
        if reach is None or ep[1] > reach[1]:
            reach = ep
    return eps, problems


def read_statistics(path: Path) -> dict[str, Any]:
    """A statistics.yaml as a mapping; a file that is not YAML, or not a mapping, is a CalvinFormatError naming it."""
    try:
        stats = yaml.safe_load(path.read_bytes())
    except (yaml.YAMLError, OSError) as e:  # not YAML, not text (yaml's reader names the bad byte), unreadable
        raise CalvinFormatError([Problem(str(path), f"not valid YAML ({' '.join(str(e).split())})")]) from None
    if not isinstance(stats, dict):
        raise CalvinFormatError([Problem(str(path), f"expected a mapping, got {type(stats).__name__}")])
    return stats


def load_episode_bounds(split_dir: Path) -> np.ndarray:
    """ep_start_end_ids.npy as stored; any problem with it is a CalvinFormatError (listing all of them)."""
    eps, problems = read_episode_bounds(split_dir)
    if problems:
        raise CalvinFormatError(problems)
    return eps


def resolve_split_dir(path: str | Path, split: str | None = None) -> Path:
    """A split folder from either a dataset root (+ split name) or the split folder itself."""
    p = Path(path)
    if split is not None and (p / split).is_dir():
        return p / split
    if (p / EP_START_END).is_file() or any(True for _ in _first_frame_files(p)):
        return p
    hint = f" and no '{split}' folder in it" if split else f" (a dataset root needs a split: {SPLITS})"
    raise CalvinFormatError([Problem(str(p), f"not a CALVIN split folder: no {EP_START_END}{hint}")])


def _first_frame_files(p: Path) -> Iterable[Path]:
    if not p.is_dir():
        return
    with os.scandir(p) as it:
        for entry in it:
            if FRAME_RE.match(entry.name):
                yield Path(entry.path)
                return


def scene_of_frame(frame_id: int, scene_info: dict[str, list[int]] | None) -> str:
    """The scene letter of a frame from scene_info ({"calvin_scene_D": [first, last]}); D when unknown."""
    for name, (first, last) in (scene_info or {}).items():
        if first <= frame_id <= last and name.startswith("calvin_scene_"):
            return name[-1]
    return "D"


def read_scene_info(path: Path) -> dict[str, list[int]]:
    """A scene_info.npy as {scene name: [first, last]} (plain ints); anything else is a CalvinFormatError naming it."""
    out = {}
    for name, span in load_pickled_npy(path).items():
        pair = np.asarray(span) if _is_sequence(span) else None
        whole = pair is not None and pair.shape == (2,) and (pair.dtype.kind in "iu" or pair.dtype.kind == "f"
                                                              and bool(np.all(pair == np.round(pair))))
        if not isinstance(name, str) or not whole or pair[0] > pair[1]:
            raise CalvinFormatError([Problem(str(path), f"expected {{scene name: [first, last] frame ids}}, got "
                                                        f"{name!r}: {span!r}")])
        out[name] = [int(pair[0]), int(pair[1])]
    return out


# CALVIN's published datasets are named by their scenes: task_<training>_<validation> (task_D_D, task_ABC_D, ...)
PUBLISHED_DATASET = re.compile(r"task_(?P<training>[A-D]+)_(?P<validation>[A-D]+)")


def published_scenes(split_dir: Path) -> str | None:
    """The scene letters a published dataset's split holds by its folder's name (task_ABC_D/training: "ABC");
    None for a folder not named that way."""
    match = PUBLISHED_DATASET.fullmatch(split_dir.parent.name)
    return match.groupdict().get(split_dir.name) if match else None


def check_published_scenes(split_dir: Path, scene_info: dict[str, list[int]]) -> None:
    """A published dataset's scene_info must name only the scenes its name says (docs/CALVIN.md, Split files).
    Copies of task_D_D downloaded before CALVIN's fix of 16 September 2022 label the D training split
    calvin_scene_A; read as A, its scene_obs blocks would be taken in A's order."""
    scenes = published_scenes(split_dir)
    wrong = {k: v for k, v in scene_info.items() if k.startswith("calvin_scene_") and scenes and k[-1] not in scenes}
    if not wrong:
        return
    fix = (f" Relabel it (the original is kept): python -m harness.data fix-scene-info {split_dir.parent} "
           f"--split {split_dir.name} --scene {scenes}" if len(scenes) == 1 else "")
    raise CalvinFormatError([Problem(str(split_dir / SCENE_INFO), (
        f"labels frames {wrong}, but the {split_dir.name} split of {split_dir.parent.name} holds scene "
        f"{', '.join(scenes)} only: copies of task_D_D downloaded before CALVIN's fix of 16 September 2022 label "
        f"its training split calvin_scene_A (mees/calvin issue 40), and the block order of scene_obs differs "
        f"between scenes.{fix}"))])


class CalvinSplit:
    """Read access to one split folder of a CALVIN-format dataset (real or recorded by this project)."""

    def __init__(self, path: str | Path, split: str | None = None):
        self.path = resolve_split_dir(path, split)
        self.episodes = load_episode_bounds(self.path)  # as stored, (N, 2) inclusive
        self.runs = merge_ranges(self.episodes)  # sorted contiguous id runs

    @property
    def num_frames(self) -> int:
        return int((self.episodes[:, 1] - self.episodes[:, 0] + 1).sum())

    def frame_path(self, frame_id: int) -> Path:
        return self.path / FRAME_NAME.format(int(frame_id))

    def frame_ids(self) -> np.ndarray:
        return np.concatenate([np.arange(s, e + 1) for s, e in self.runs]) if len(self.runs) else np.zeros(0, np.int64)

    def has_range(self, start: int, end: int) -> bool:
        return len(self.runs) > 0 and range_in_runs(self.runs, start, end)

    def load_frame(self, frame_id: int, keys: Iterable[str] = tuple(FRAME_KEYS)) -> dict[str, np.ndarray]:
        return read_frame(self.frame_path(frame_id), keys)

    @cached_property
    def lang_path(self) -> Path:
        path = lang_annotation_path(self.path)
        if path is None:
            raise CalvinFormatError([Problem(str(self.path / LANG_DIR / LANG_FILE), f"missing file (nor {LANG_FILE} in the split)")])
        return path

    @cached_property
    def lang(self) -> LangAnnotations:
        return LangAnnotations.from_dict(load_pickled_npy(self.lang_path), str(self.lang_path))

    def scene_info(self) -> dict[str, list[int]] | None:
        path = self.path / SCENE_INFO
        if not path.is_file():
            return None
        info = read_scene_info(path)
        check_published_scenes(self.path, info)
        return info

    def statistics(self) -> dict[str, Any] | None:
        path = self.path / STATISTICS
        return read_statistics(path) if path.is_file() else None

    def eval_embeddings(self) -> dict[str, Any] | None:
        """validation/lang_annotations/embeddings.npy: task -> {"emb", "ann"} (optional)."""
        path = self.path / LANG_DIR / EVAL_EMBEDDINGS
        return load_pickled_npy(path) if path.is_file() else None
