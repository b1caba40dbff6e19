"""Broken copies of a CALVIN-format split, the errors the sync check and the doctor must catch.

    python -m tests.dataset_copies shift SRC DST [--by 1]     actions one frame off their observations
    python -m tests.dataset_copies swap SRC DST               every annotation labelled with another task
    python -m tests.dataset_copies flip-gripper SRC DST       the gripper command of the other sign

SRC and DST are dataset roots (each split is copied) or split folders.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np

from harness.data.calvin_format import FRAME_NAME, SPLITS, CalvinSplit, load_pickled_npy

ACTION_KEYS = ("actions", "rel_actions")


def _splits(root: Path) -> list[Path]:
    found = [root / s for s in SPLITS if (root / s).is_dir()]
    return found or [root]


def _rewrite_frame(path: Path, values: dict[str, np.ndarray]) -> None:
    with np.load(path, allow_pickle=False) as f:
        frame = {k: f[k] for k in f.files}
    frame.update(values)
    np.savez_compressed(path, **frame)


def _copy(src: Path, dst: Path) -> list[tuple[Path, Path]]:
    """Copy the tree; (source split, copied split) pairs."""
    shutil.copytree(src, dst)
    return [(s, dst / s.relative_to(src)) for s in _splits(src)]


def shift_actions(src: str | Path, dst: str | Path, by: int = 1) -> Path:
    """Frame t of every episode holds the actions of frame t + by (clamped to the episode): with by=1 the
    actions run one frame ahead of the observations, with by=-1 one frame behind."""
    src, dst = Path(src), Path(dst)
    for split_src, split_dst in _copy(src, dst):
        split = CalvinSplit(split_src)
        for s, e in split.episodes:
            actions = {t: split.load_frame(int(t), ACTION_KEYS) for t in range(int(s), int(e) + 1)}
            for t in range(int(s), int(e) + 1):
                _rewrite_frame(split_dst / FRAME_NAME.format(t), actions[min(max(t + by, int(s)), int(e))])
    return dst


def flip_gripper(src: str | Path, dst: str | Path) -> Path:
    """The gripper command of every frame negated (+1 closes): another dataset's convention."""
    src, dst = Path(src), Path(dst)
    for split_src, split_dst in _copy(src, dst):
        split = CalvinSplit(split_src)
        for t in split.frame_ids():
            values = split.load_frame(int(t), ACTION_KEYS)
            for v in values.values():
                v[6] = -v[6]
            _rewrite_frame(split_dst / FRAME_NAME.format(int(t)), values)
    return dst


def swap_labels(src: str | Path, dst: str | Path) -> Path:
    """Every annotation gets the task (and instruction) of the next annotation with a different task."""
    src, dst = Path(src), Path(dst)
    for split_src, split_dst in _copy(src, dst):
        path = CalvinSplit(split_src).lang_path
        d = load_pickled_npy(path)
        tasks, anns = list(d["language"]["task"]), list(d["language"]["ann"])
        n = len(tasks)
        other = [next((j % n for j in range(k + 1, k + n) if tasks[j % n] != tasks[k]), k) for k in range(n)]
        d["language"]["task"] = [tasks[j] for j in other]
        d["language"]["ann"] = [anns[j] for j in other]
        np.save(split_dst / path.relative_to(split_src), d, allow_pickle=True)
    return dst


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.dataset_copies", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kind", choices=("shift", "swap", "flip-gripper"))
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--by", type=int, default=1, help="shift: frames the actions move ahead (negative: behind)")
    args = ap.parse_args(argv)
    if args.kind == "shift":
        shift_actions(args.src, args.dst, args.by)
    elif args.kind == "swap":
        swap_labels(args.src, args.dst)
    else:
        flip_gripper(args.src, args.dst)
    print(args.dst)
    return 0


if __name__ == "__main__":
    sys.exit(main())
