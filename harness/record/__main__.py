"""`python -m harness.record OUT [options]` (vla-harness-record): record a CALVIN-format dataset with the scripted expert.

Running the same command again continues an interrupted recording. Options follow harness/tool_args.py's
convention (`--option VALUE`, several values one after another).
"""

from __future__ import annotations

import argparse
import json
import sys

from harness.folder_lock import FolderBusy
from harness.record.recorder import RecordConfig, record_dataset
from harness.sim.layout import parse_scenes
from harness.strict_config import defaults_of
from harness.tool_args import renamed, several


def main(argv: list[str] | None = None) -> int:
    default = defaults_of(RecordConfig)  # an option not given keeps RecordConfig's default: one owner per setting
    ap = argparse.ArgumentParser(prog="python -m harness.record", description=__doc__,
                                 argument_default=argparse.SUPPRESS)
    ap.add_argument("out", help="dataset root (training/ and validation/ inside)")
    ap.add_argument("--scene", nargs="+", help="the scene(s) of the training split's env, e.g. D, or A B C "
                    f"(the validation split is D; default: {' '.join(default['scenes'])})")
    ap.add_argument("--episodes", type=int, help=f"training episodes (task chains) per scene (default: {default['episodes']})")
    ap.add_argument("--val-episodes", type=int, help=f"validation episodes, scene D (default: {default['val_episodes']})")
    ap.add_argument("--chain-length", type=int, help=f"tasks per episode, 1..5 (default: {default['chain_length']})")
    ap.add_argument("--tasks", nargs="+", help="task names to draw from (default: all 34)")
    ap.add_argument("--ep-len", type=int, help=f"steps allowed per subtask (default: {default['ep_len']})")
    ap.add_argument("--workers", type=int, help="recording processes (default: the number of CPUs)")
    ap.add_argument("--seed", type=int, help=f"(default: {default['seed']})")
    ap.add_argument("--balance", action="store_true", help="draw tasks so that each is about equally frequent")
    ap.add_argument("--embedding-model", help="sentence-embedding model (hub name or folder) for language.emb")
    ap.add_argument("--env", help=f"env backend that records: builtin, or calvin (the real calvin_env; default: {default['env']})")
    ap.add_argument("--perturb", nargs="+", metavar="AXIS=LEVEL",
                    help="perturbation axes of the env, e.g. camera=2 distractors=1, each episode drawn from its own "
                    "seed (docs/ROBUSTNESS.md; the env's axes only: not latency or language)")
    renamed(ap, "--scenes", "--scene (as env.scene in the evaluation)")
    given = vars(ap.parse_args(argv))
    try:
        if "scene" in given:
            given["scenes"] = parse_scenes(several(given.pop("scene")))
        if "tasks" in given:
            given["tasks"] = several(given["tasks"])
        if "perturb" in given:
            given["perturb"] = perturb_levels(several(given["perturb"]))
        cfg = RecordConfig(**given)
    except ValueError as e:
        ap.error(str(e))
    try:
        summary = record_dataset(cfg, progress=sys.stderr.isatty())
    except FolderBusy as e:  # another recording writes there: nothing was changed
        print(f"harness.record: {e}", file=sys.stderr)
        return 1
    print(json.dumps(summary))
    return 0


def perturb_levels(items: list[str]) -> dict[str, int]:
    """["camera=2", "blur=1"] -> {"camera": 2, "blur": 1}; RecordConfig checks the axes and levels."""
    levels = {}
    for item in items:
        axis, _, level = item.partition("=")
        if not level.strip().isdigit():
            raise ValueError(f"--perturb: expected AXIS=LEVEL (e.g. camera=2), got {item!r}")
        levels[axis.strip()] = int(level)
    return levels


if __name__ == "__main__":
    sys.exit(main())
