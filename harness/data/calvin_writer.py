"""Writing datasets in CALVIN's exact on-disk layout (see `calvin_format` for the layout).

One process owns a split's `CalvinDatasetWriter`; episodes may be produced anywhere:

    writer = CalvinDatasetWriter(root, "training")        # creates, or resumes, root/training
    # in a worker process (only a folder path crosses the process boundary):
    ep = EpisodeWriter(writer.staging_dir, scene="calvin_scene_D")
    for obs, action in rollout:
        ep.add_frame(rgb_static=..., rgb_gripper=..., depth_static=..., depth_gripper=...,
                     actions=..., rel_actions=..., robot_obs=..., scene_obs=...)
    ep.add_annotation(start=12, end=80, ann="open the drawer", task="open_drawer")  # episode-local, inclusive
    record = ep.finish()                                   # small and picklable: send it to the parent
    # in the owning process:
    first, last = writer.commit(record)                    # global frame ids of the episode
    ...
    writer.close(); finalize_dataset(root)                 # statistics.yaml from the training split

In a single process, `writer.begin_episode(scene)`, `writer.add_frame(...)`, `writer.add_annotation(...)`
and `writer.end_episode()` do the same. Episodes of one scene must be committed together (CALVIN's
`scene_info.npy` gives each scene one frame range), and frame ids run on across episodes.

Crash safety. A frame is written to a temporary name, fsynced and renamed, so no half frame ever
carries a frame name. Workers write into `<split>/.staging/<uuid>/`; `commit` renames the frames to
their global names and then rewrites the metadata files, `ep_start_end_ids.npy` last: that file is
the commit point. Reopening a split keeps exactly the episodes it lists; frames, annotations and
scene ranges past its last frame (a commit that was cut short) and all staging folders (episodes
still being recorded) are deleted, and recording goes on after the last complete episode.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from harness.data.calvin_format import (
    EP_LENS,
    EP_START_END,
    FRAME_KEYS,
    FRAME_NAME,
    FRAME_RE,
    LANG_DIR,
    LANG_FILE,
    OPTIONAL_FRAME_KEYS,
    SCENE_INFO,
    SPLITS,
    STATISTICS,
    VECTOR_KEYS,
    CalvinFormatError,
    CalvinSplit,
    LangAnnotations,
    Problem,
    frame_key_problems,
    frame_value_problems,
    load_episode_bounds,
    load_pickled_npy,
    published_scenes,
    read_scene_info,
)
from harness.durable_files import TMP_GLOB, atomic_write, fsync_dir
from harness.folder_lock import FolderLock

STAGING = ".staging"


def save_npy(path: Path, value: Any) -> None:
    """np.save, atomically; dicts become the pickled 0-d object arrays CALVIN uses."""
    atomic_write(path, lambda f: np.save(f, value, allow_pickle=isinstance(value, dict)))


SCENE_INFO_BEFORE_FIX = "scene_info.before_fix.npy"


def fix_scene_info(split_dir: Path, scene: str) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    """Relabel a split's scene_info.npy, labelled as one scene, as another (an old task_D_D copy's training split:
    calvin_scene_A -> calvin_scene_D; docs/CALVIN.md, Split files); a folder named as CALVIN's datasets must hold
    that scene. The original is kept beside it as scene_info.before_fix.npy. Returns (before, after)."""
    path = split_dir / SCENE_INFO
    if not path.is_file():
        raise CalvinFormatError([Problem(str(path), "no scene_info.npy to relabel")])
    if scene not in ("A", "B", "C", "D"):
        raise ValueError(f"scene must be one of A, B, C, D, got {scene!r}")
    before = read_scene_info(path)
    if len(before) != 1:  # several scenes are several ranges: which frames are which is not for a relabel to guess
        raise CalvinFormatError([Problem(str(path), f"labels {len(before)} frame ranges {before}: only a split "
                                                    "labelled as one scene can be relabelled")])
    scenes = published_scenes(split_dir)
    if scenes is not None and scene not in scenes:
        raise CalvinFormatError([Problem(str(path), f"the {split_dir.name} split of {split_dir.parent.name} holds "
                                                    f"scene(s) {', '.join(scenes)}, not {scene}")])
    (first, last), = before.values()
    after = {f"calvin_scene_{scene}": [first, last]}
    kept = split_dir / SCENE_INFO_BEFORE_FIX
    if not kept.exists():  # a second fix keeps the first original
        atomic_write(kept, lambda f: f.write(path.read_bytes()))
    save_npy(path, after)
    return before, after


def prepare_frame(arrays: dict[str, Any], where: str) -> dict[str, np.ndarray]:
    """Check a frame against CALVIN's spec; floats become float32, images must already be uint8."""
    problems = []
    unknown = set(arrays) - set(FRAME_KEYS) - set(OPTIONAL_FRAME_KEYS)
    if unknown:
        problems.append(Problem(where, f"unknown keys {sorted(unknown)}"))
    problems += [Problem(where, "missing key", k) for k in FRAME_KEYS if k not in arrays]
    out = {}
    for key, value in arrays.items():
        if key in unknown:
            continue
        a = np.asarray(value)
        if a.dtype.kind == "f":
            a = a.astype(np.float32)
        p = frame_key_problems(where, key, a.dtype, a.shape)
        if not p and key in VECTOR_KEYS:
            p = frame_value_problems(where, key, a)
        problems += p
        out[key] = np.ascontiguousarray(a)
    if problems:
        raise CalvinFormatError(problems)
    return out


@dataclass(frozen=True)
class AnnotationRecord:
    start: int  # inclusive frame ids: episode-local in an EpisodeRecord, global once committed
    end: int
    ann: str
    task: str
    emb: np.ndarray | None = None  # (D,) sentence embedding, when an embedding model is configured


@dataclass(frozen=True)
class EpisodeRecord:
    """A finished episode waiting in a staging folder; small and picklable."""

    staging: str
    num_frames: int
    scene: str
    annotations: tuple[AnnotationRecord, ...]


class EpisodeWriter:
    """Writes one episode's frames into its own staging folder (safe to use in a worker process)."""

    def __init__(self, staging_root: str | Path, scene: str, compress: bool = True):
        if not scene:
            raise ValueError("EpisodeWriter.scene must name the scene, e.g. 'calvin_scene_D'")
        self.dir = Path(staging_root) / uuid.uuid4().hex
        self.dir.mkdir(parents=True)
        self.scene = scene
        self.compress = compress
        self.num_frames = 0
        self.annotations: list[AnnotationRecord] = []

    def add_frame(self, **arrays: Any) -> int:
        """Write one frame (all 8 CALVIN keys, tactile keys optional); returns its episode-local index."""
        frame = prepare_frame(arrays, f"frame {self.num_frames} of episode {self.dir.name}")
        save = np.savez_compressed if self.compress else np.savez
        # the episode's folder is synced once, when it is finished (its frames are not named before that)
        atomic_write(self.dir / f"{self.num_frames:07d}.npz", lambda f: save(f, **frame), sync_folder=False)
        self.num_frames += 1
        return self.num_frames - 1

    def add_annotation(self, start: int, end: int, ann: str, task: str, emb: np.ndarray | None = None) -> None:
        """A language annotation over episode-local frames [start, end] (inclusive)."""
        if not (0 <= start <= end):
            raise ValueError(f"annotation {task!r}: expected 0 <= start <= end, got [{start}, {end}]")
        if not ann or not task:
            raise ValueError(f"annotation [{start}, {end}]: instruction and task must be non-empty")
        if emb is not None:
            emb = np.asarray(emb, dtype=np.float32).reshape(-1)
        self.annotations.append(AnnotationRecord(int(start), int(end), str(ann), str(task), emb))

    def finish(self) -> EpisodeRecord:
        if self.num_frames == 0:
            raise ValueError(f"episode {self.dir.name} has no frames")
        for a in self.annotations:
            if a.end >= self.num_frames:
                raise ValueError(f"annotation {a.task!r} [{a.start}, {a.end}] runs past the episode's {self.num_frames} frames")
        fsync_dir(self.dir)
        return EpisodeRecord(str(self.dir), self.num_frames, self.scene, tuple(self.annotations))

    def discard(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


class CalvinDatasetWriter:
    """Owns one split folder: assigns global frame ids, keeps CALVIN's metadata files, resumes."""

    def __init__(self, root: str | Path, split: str, first_frame_id: int = 0, compress: bool = True):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.path = Path(root) / split
        self.path.mkdir(parents=True, exist_ok=True)
        self.compress = compress
        self._lock = FolderLock(self.path).acquire()
        self.episodes: list[tuple[int, int]] = []
        self.annotations: list[AnnotationRecord] = []
        self.annotation_episodes: list[int] = []
        self.scene_info: dict[str, list[int]] = {}
        self._last_scene: str | None = None
        self._current: EpisodeWriter | None = None
        self.next_frame_id = int(first_frame_id)
        try:
            self.resumed_from = self._recover()
        except BaseException:  # e.g. a metadata file that cannot be read: the split stays as it is, unlocked
            self._lock.release()
            raise

    @property
    def staging_dir(self) -> Path:
        return self.path / STAGING

    @property
    def num_frames(self) -> int:
        return sum(e - s + 1 for s, e in self.episodes)

    # -- single-process convenience -------------------------------------------------------------
    def begin_episode(self, scene: str) -> EpisodeWriter:
        if self._current is not None:
            raise RuntimeError("an episode is already open: end_episode() it first")
        self._current = EpisodeWriter(self.staging_dir, scene, self.compress)
        return self._current

    def add_frame(self, **arrays: Any) -> int:
        if self._current is None:
            raise RuntimeError("begin_episode(scene) before add_frame()")
        return self._current.add_frame(**arrays)

    def add_annotation(self, start: int, end: int, ann: str, task: str, emb: np.ndarray | None = None) -> None:
        if self._current is None:
            raise RuntimeError("begin_episode(scene) before add_annotation()")
        self._current.add_annotation(start, end, ann, task, emb)

    def end_episode(self) -> tuple[int, int]:
        if self._current is None:
            raise RuntimeError("no open episode")
        ep, self._current = self._current, None
        try:
            return self.commit(ep.finish())
        except BaseException:
            ep.discard()
            raise

    # -- committing --------------------------------------------------------------------------------
    def commit(self, record: EpisodeRecord) -> tuple[int, int]:
        """Move a finished episode into the split under global ids; returns its (first, last) ids."""
        staging = Path(record.staging)
        if staging.parent.resolve() != self.staging_dir.resolve():
            raise ValueError(f"episode {staging} was not staged in this split's {self.staging_dir}")
        if record.scene in self.scene_info and record.scene != self._last_scene:
            raise ValueError(
                f"scene {record.scene!r} already has frames {self.scene_info[record.scene]}; CALVIN's scene_info.npy "
                "gives each scene one range, so commit a scene's episodes together"
            )
        # checked before anything moves: a split's annotations are stacked into one (N, 1, D) language.emb
        emb_set = {a.emb is not None for a in (*self.annotations, *record.annotations)}
        if len(emb_set) > 1:
            raise ValueError("either every annotation has an embedding (language.emb) or none has")
        sizes = {a.emb.size for a in (*self.annotations, *record.annotations) if a.emb is not None}
        if len(sizes) > 1:
            raise ValueError(f"language embeddings of {sorted(sizes)} values: every annotation's embedding (language.emb) "
                             "must have the split's size")
        first = self.next_frame_id
        last = first + record.num_frames - 1
        for i in range(record.num_frames):
            os.replace(staging / f"{i:07d}.npz", self.path / FRAME_NAME.format(first + i))
        fsync_dir(self.path)
        shutil.rmtree(staging)
        self.episodes.append((first, last))
        for a in record.annotations:
            self.annotations.append(AnnotationRecord(first + a.start, first + a.end, a.ann, a.task, a.emb))
            self.annotation_episodes.append(len(self.episodes) - 1)
        self.scene_info[record.scene] = [self.scene_info.get(record.scene, [first])[0], last]
        self._last_scene = record.scene
        self.next_frame_id = last + 1
        self._write_metadata()
        return first, last

    def _lang(self) -> LangAnnotations:
        anns = self.annotations
        emb = np.stack([a.emb for a in anns])[:, None, :] if anns and anns[0].emb is not None else None
        indx = np.asarray([(a.start, a.end) for a in anns], dtype=np.int64).reshape(-1, 2)
        return LangAnnotations(indx, [a.ann for a in anns], [a.task for a in anns], emb, list(self.annotation_episodes))

    def _write_metadata(self) -> None:
        (self.path / LANG_DIR).mkdir(exist_ok=True)
        save_npy(self.path / LANG_DIR / LANG_FILE, self._lang().to_dict())
        save_npy(self.path / SCENE_INFO, dict(self.scene_info))
        eps = np.asarray(self.episodes, dtype=np.int64).reshape(-1, 2)
        save_npy(self.path / EP_LENS, eps[:, 1] - eps[:, 0] + 1)
        save_npy(self.path / EP_START_END, eps)  # the commit point: written last

    # -- resuming ----------------------------------------------------------------------------------
    def _recover(self) -> dict[str, int]:
        """Truncate the split to its last committed episode (see the module docstring)."""
        shutil.rmtree(self.staging_dir, ignore_errors=True)
        if (self.path / EP_START_END).is_file():
            eps = load_episode_bounds(self.path)
            self.episodes = [(int(s), int(e)) for s, e in eps]
        last = max((e for _, e in self.episodes), default=self.next_frame_id - 1)
        self.next_frame_id = last + 1
        lang_path = self.path / LANG_DIR / LANG_FILE
        if lang_path.is_file():
            lang = LangAnnotations.from_dict(load_pickled_npy(lang_path), str(lang_path))
            for i, (s, e) in enumerate(lang.indx):
                if e <= last:
                    emb = None if lang.emb is None else lang.emb[i, 0]
                    self.annotations.append(AnnotationRecord(int(s), int(e), lang.ann[i], lang.task[i], emb))
                    self.annotation_episodes.append(self._episode_of(int(s)))
        if (self.path / SCENE_INFO).is_file():
            for scene, (s, e) in read_scene_info(self.path / SCENE_INFO).items():
                if s <= last:
                    self.scene_info[scene] = [s, int(min(e, last))]
            self._last_scene = max(self.scene_info, key=lambda k: self.scene_info[k][1], default=None)
        removed = 0
        for folder in (self.path, self.path / LANG_DIR):
            if not folder.is_dir():
                continue
            with os.scandir(folder) as it:
                for entry in it:
                    m = FRAME_RE.match(entry.name)
                    if (m and int(m.group(1)) > last) or fnmatch(entry.name, TMP_GLOB):
                        os.unlink(entry.path)
                        removed += 1
        if self.episodes or removed:
            self._write_metadata()
        return {"episodes": len(self.episodes), "frames": self.num_frames, "removed_files": removed}

    def _episode_of(self, frame_id: int) -> int:
        for i, (s, e) in enumerate(self.episodes):
            if s <= frame_id <= e:
                return i
        return -1

    def close(self) -> None:
        if self._current is not None:
            self._current.discard()
            self._current = None
        if self.staging_dir.is_dir() and not any(self.staging_dir.iterdir()):
            self.staging_dir.rmdir()
        self._lock.release()

    def __enter__(self) -> "CalvinDatasetWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def compute_statistics(split: CalvinSplit) -> dict[str, Any]:
    """statistics.yaml content for a split, in CALVIN's layout plus this project's action statistics."""
    n = split.num_frames
    if n == 0:
        raise ValueError(f"{split.path}: no frames to compute statistics from")
    sums = {k: np.zeros(d, np.float64) for k, d in (("robot_obs", 15), ("scene_obs", 24), ("actions", 7), ("rel_actions", 7))}
    sq = {k: np.zeros_like(v) for k, v in sums.items()}
    lo = {k: np.full_like(v, np.inf) for k, v in sums.items()}
    hi = {k: np.full_like(v, -np.inf) for k, v in sums.items()}
    for fid in split.frame_ids():
        frame = split.load_frame(int(fid), sums)
        for k, v in frame.items():
            v = v.astype(np.float64)
            sums[k] += v
            sq[k] += v * v
            np.minimum(lo[k], v, out=lo[k])
            np.maximum(hi[k], v, out=hi[k])
    mean = {k: sums[k] / n for k in sums}
    std = {k: np.sqrt(np.maximum(sq[k] / n - mean[k] ** 2, 0.0)) for k in sums}

    def r(x: np.ndarray) -> list[float]:
        return [round(float(v), 6) for v in x]

    stats: dict[str, Any] = {
        k: [{"_target_": "calvin_agent.utils.transforms.NormalizeVector", "mean": r(mean[k]), "std": r(std[k])}]
        for k in ("robot_obs", "scene_obs")
    }
    stats["act_min_bound"], stats["act_max_bound"] = r(lo["actions"]), r(hi["actions"])
    for k in ("actions", "rel_actions"):
        stats[k] = {"mean": r(mean[k]), "std": r(std[k]), "min": r(lo[k]), "max": r(hi[k])}
    stats["num_frames"] = n
    return stats


def finalize_dataset(root: str | Path) -> dict[str, Any]:
    """Write statistics.yaml into every split of `root`, computed from the training split (as CALVIN does)."""
    root = Path(root)
    present = [s for s in SPLITS if (root / s / EP_START_END).is_file()]
    if not present:
        raise ValueError(f"{root}: no split with {EP_START_END} to finalise")
    source = "training" if "training" in present else present[0]
    stats = compute_statistics(CalvinSplit(root / source))
    stats["source_split"] = source
    text = yaml.safe_dump(stats, sort_keys=False, default_flow_style=None, width=120)
    for s in present:
        atomic_write(root / s / STATISTICS, lambda f: f.write(text.encode()))
    return stats
