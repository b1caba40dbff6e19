"""`python -m harness.data check PATH [--sync]`, `convert SRC DST` and `fix-scene-info ROOT --scene D` (vla-harness-data;
recording a dataset: `python -m harness.record`).

Options follow harness/tool_args.py's convention (`--option VALUE`, several values one after another).
"""

from __future__ import annotations

import argparse
import json
import sys

from harness.data.calvin_format import CalvinFormatError, resolve_split_dir
from harness.data.calvin_writer import fix_scene_info
from harness.data.check import check_path, summary_dict
from harness.data.images import RESIZE_MODES
from harness.data.shards import DEFAULT_KEYS, convert, directory_size
from harness.data.sync import check_sync
from harness.tool_args import several


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a number of frames >= 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.data", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="validate a dataset (CALVIN npz or shards); exit 1 on any error")
    c.add_argument("path", help="dataset root, split folder, or converted split")
    c.add_argument("--split", help="check only this split of a dataset root")
    c.add_argument("--sample", type=positive_int, help="check the contents of this many random frames per split (all by default)")
    c.add_argument("--quick", action="store_true",
                   help="check images and depth by their npy headers only (default: every member is read and CRC-checked)")
    c.add_argument("--json", action="store_true", help="print the reports as JSON")
    c.add_argument("--sync", action="store_true",
                   help="also check that actions, observations and language line up (harness/data/sync.py; docs/DOCTOR.md)")
    c.add_argument("--sync-episodes", type=positive_int,
                   help="--sync: check this many episodes per split, spread over it (all by default)")
    c.add_argument("--sync-env", default="builtin",
                   help="--sync: the env backend that restores recorded states for the task oracle (builtin or calvin)")
    v = sub.add_parser("convert", help="convert per-frame npz splits to memory-mapped shards")
    v.add_argument("src", help="dataset root or split folder")
    v.add_argument("dst", help="destination folder (must not exist per split)")
    v.add_argument("--split", nargs="+", help="convert only these splits")
    v.add_argument("--frames", choices=("all", "annotated"), default="all", help="all frames, or only those inside annotations")
    v.add_argument("--keys", nargs="+", default=list(DEFAULT_KEYS), help="frame keys to store")
    v.add_argument("--resize", nargs="+", default=[], metavar="KEY=EDGE",
                   help="store camera images at this square size, e.g. rgb_static=96 rgb_gripper=96 (the model's input size)")
    v.add_argument("--resize-mode", choices=RESIZE_MODES, default="bicubic",
                   help="interpolation of --resize; use the model's (its image processor's resample; bicubic for the tiny presets)")
    v.add_argument("--shard-frames", type=positive_int, default=2048, help="frames per shard")
    v.add_argument("--workers", type=positive_int, default=1, help="processes converting shards in parallel")
    v.add_argument("--resume", action="store_true",
                   help="carry on a conversion that was stopped: keep the splits DST already has when they were "
                        "converted from the same source with the same settings (any other is an error)")
    x = sub.add_parser("fix-scene-info", help="relabel a split's scene_info.npy as one scene (an old task_D_D copy: "
                       "its training split labelled calvin_scene_A); the original is kept as scene_info.before_fix.npy")
    x.add_argument("root", help="dataset root")
    x.add_argument("--split", nargs="+", default=["training"], help="the splits to relabel (default: training)")
    x.add_argument("--scene", required=True, choices=("A", "B", "C", "D"), help="the scene the split holds")
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["record"]:
        ap.error("recording moved: python -m harness.record OUT [options] (or scripts/collect_data.sh)")
    args = ap.parse_args(argv)

    if args.cmd == "check":
        reports = check_path(args.path, split=args.split, sample=args.sample, progress=sys.stderr.isatty(), quick=args.quick)
        syncs = [check_sync(r.path, episodes=args.sync_episodes, env=args.sync_env, progress=sys.stderr.isatty())
                 for r in reports if args.sync and r.format != "?"]
        if args.json:
            print(json.dumps([summary_dict(r) for r in reports] + [s.to_dict() for s in syncs], indent=1))
        else:
            print("\n\n".join([r.render() for r in reports] + [s.render() for s in syncs]))
        return 1 if any(r.errors for r in [*reports, *syncs]) else 0

    if args.cmd == "fix-scene-info":
        for split in args.split:
            try:
                before, after = fix_scene_info(resolve_split_dir(args.root, split), args.scene)
            except CalvinFormatError as e:
                print(f"fix-scene-info: {e}", file=sys.stderr)
                return 1
            print(f"{split}: scene_info {before} -> {after}")
        return 0

    try:
        results = convert(args.src, args.dst, splits=several(args.split), keys=several(args.keys), frames=args.frames,
                          resize=_key_sizes(ap, several(args.resize)), resize_mode=args.resize_mode,
                          shard_frames=args.shard_frames, workers=args.workers, resume=args.resume)
    except (FileExistsError, ValueError) as e:  # a destination in the way, bad settings, a malformed source
        print(f"convert: {e}", file=sys.stderr)
        return 1
    for r in results:
        kept = " (kept: converted before)" if r.get("kept") else ""
        print(f"{r['split']}: {r['frames']} frames in {r['shards']} shards, {r['bytes'] / 2**20:.1f} MiB{kept}")
    print(f"source {directory_size(args.src) / 2**20:.1f} MiB -> shards {directory_size(args.dst) / 2**20:.1f} MiB")
    return 0


def _key_sizes(ap: argparse.ArgumentParser, items: list[str]) -> dict[str, int]:
    """["rgb_static=96", ...] -> {"rgb_static": 96}; anything else is a usage error naming the item."""
    sizes = {}
    for item in items:
        key, _, edge = item.partition("=")
        if not edge.isdigit():
            ap.error(f"--resize: expected KEY=EDGE (e.g. rgb_static=96), got {item!r}")
        sizes[key] = int(edge)
    return sizes


if __name__ == "__main__":
    sys.exit(main())
