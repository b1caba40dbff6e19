"""Windows/s of the per-frame npz reader vs the memory-mapped shards, on the same dataset, in one run.

    python benchmarks/bench_data_loading.py [PATH] [--split training] [--windows 300]

PATH is a CALVIN-format dataset root or split (real or recorded). Without it, a CALVIN-layout dataset
with rendered-looking images (smooth table, moving blocks, a little noise; compressed npz like
CALVIN's) is written to a temporary folder first. The shards are converted into a temporary folder.
Both readers draw the same random windows (window 8, chunk 10, static + gripper images, robot_obs,
training augmentation), in one process; each reader's rate is the best of 3 timed passes after an
untimed one, so both read from the page cache (the steady state of a dataset that fits in RAM; the
machine may be shared, and the best pass is the least disturbed one).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.data.calvin_format import CalvinSplit, rel_actions_from_absolute  # noqa: E402
from harness.data.calvin_writer import CalvinDatasetWriter, finalize_dataset  # noqa: E402
from harness.data.normalization import ActionNormalizer  # noqa: E402
from harness.data.shards import ShardFrameSource, convert_split, directory_size  # noqa: E402
from harness.data.windows import NpzFrameSource, WindowDataset, WindowOptions, WindowSpec  # noqa: E402


def render(size: int, t: float, rng: np.random.Generator) -> np.ndarray:
    """A flat-shaded table with three coloured blocks that move over time, plus sensor-like noise."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    img = np.stack([150 + 40 * y, 120 + 30 * x, 90 + 20 * (x + y) / 2], axis=-1)
    for k, colour in enumerate(((200, 40, 40), (40, 60, 200), (230, 120, 180))):
        cx = 0.25 + 0.25 * k + 0.05 * np.sin(t / 20 + k)
        cy = 0.5 + 0.1 * np.cos(t / 30 + k)
        h = 0.06
        img[(abs(x - cx) < h) & (abs(y - cy) < h)] = colour
    img += rng.normal(0, 2.0, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def synthesise(root: Path, episodes: int = 2, frames: int = 400) -> None:
    rng = np.random.default_rng(0)
    with CalvinDatasetWriter(root, "training", first_frame_id=358482) as w:
        for e in range(episodes):
            w.begin_episode("calvin_scene_D")
            robot_obs = np.zeros(15, np.float32)
            robot_obs[:3], robot_obs[3:6], robot_obs[14] = (0.0, -0.2, 0.55), (3.1, 0.0, 1.5), 1.0
            for t in range(frames):
                actions = np.concatenate([robot_obs[:6] + rng.normal(0, 0.01, 6), [1.0 if (t // 50) % 2 else -1.0]])
                w.add_frame(
                    rgb_static=render(200, t + 1000 * e, rng), rgb_gripper=render(84, t + 1000 * e + 7, rng),
                    depth_static=(4.0 + rng.normal(0, 0.01, (200, 200))).astype(np.float32),
                    depth_gripper=(0.3 + rng.normal(0, 0.01, (84, 84))).astype(np.float32),
                    actions=actions, rel_actions=rel_actions_from_absolute(actions, robot_obs),
                    robot_obs=robot_obs, scene_obs=rng.normal(0, 0.1, 24),
                )
                robot_obs[:6] = actions[:6]
                robot_obs[14] = actions[6]
            for s in range(0, frames - 64, 32):
                w.add_annotation(s, s + 63, "pull the handle to open the drawer", "open_drawer")
            w.end_episode()
    finalize_dataset(root)


def rate(ds: WindowDataset, indices: np.ndarray, repeats: int = 3) -> float:
    """Best of `repeats` timed passes, after an untimed one that puts both readers' files in the page cache."""
    best = float("inf")
    for r in range(repeats + 1):
        t = time.perf_counter()
        for i in indices:
            ds[int(i)]
        if r:
            best = min(best, time.perf_counter() - t)
    return len(indices) / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("path", nargs="?", help="CALVIN-format dataset root or split (default: synthesise one)")
    ap.add_argument("--split", default="training")
    ap.add_argument("--windows", type=int, default=300, help="windows timed on the npz reader (the same ones x10 "
                    "on the shards)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    tmp = tempfile.TemporaryDirectory(prefix="bench_data_")
    if args.path is None:
        print("no dataset given: synthesising a CALVIN-layout dataset (2 episodes x 400 frames, rendered-looking images)")
        t = time.perf_counter()
        synthesise(Path(tmp.name) / "calvin")
        print(f"  written in {time.perf_counter() - t:.1f} s")
        src = CalvinSplit(Path(tmp.name) / "calvin", "training")
    else:
        src = CalvinSplit(args.path, args.split)
    t = time.perf_counter()
    convert_split(src, Path(tmp.name) / "shards", progress=False)
    print(f"converted {src.num_frames} frames to shards in {time.perf_counter() - t:.1f} s")

    spec, options = WindowSpec(8, 10, cameras=("static", "gripper")), WindowOptions(augment=True)
    npz = WindowDataset(NpzFrameSource(src), spec, ActionNormalizer(), options)
    sh = WindowDataset(ShardFrameSource(Path(tmp.name) / "shards"), spec, ActionNormalizer(), options)
    if len(npz) != len(sh):
        raise SystemExit(f"the shards hold {len(sh)} windows, the npz files {len(npz)}: not the same dataset")
    indices = np.random.default_rng(0).integers(0, len(npz), args.windows)
    r_npz = rate(npz, indices)
    r_sh = rate(sh, np.tile(indices, 10))  # the same windows, ten times over (the shards read them faster)
    frames_bytes = sum(src.frame_path(f).stat().st_size for f in src.frame_ids())
    print(f"dataset: {src.path} ({len(npz)} windows; window 8, chunk 10, static + gripper images, augmentation on)")
    print(f"per-frame npz : {r_npz:9.1f} windows/s   {directory_size(src.path) / 2**20:8.1f} MiB on disk "
          f"({frames_bytes / src.num_frames / 1024:.0f} KiB per frame file)")
    print(f"sharded mmap  : {r_sh:9.1f} windows/s   {directory_size(Path(tmp.name) / 'shards') / 2**20:8.1f} MiB on disk "
          f"(keys: {', '.join(sh.source.keys)})")
    print(f"speed-up      : {r_sh / r_npz:9.1f} x")
    tmp.cleanup()


if __name__ == "__main__":
    main()
