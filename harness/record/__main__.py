"""`python -m harness.record OUT [options]` (vla-harness-record): record a CALVIN-format dataset with the scripted expert.

Running the same command again continues an interrupted recording. Options follow harness/tool_args.py's
convention (`--option VALUE`, several values one after another).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from harness.record.recorder import RecordConfig, record_dataset
from harness.sim.layout import parse_scenes
from harness.tool_args import renamed, several


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.record", description=__doc__)
    ap.add_argument("out", help="dataset root (training/ and validation/ inside)")
    ap.add_argument("--scene", nargs="+", default=["D"],
                    help="the scene(s) of the training split's env, e.g. D, or A B C (the validation split is D)")
    ap.add_argument("--episodes", type=int, default=100, help="training episodes (task chains) per scene")
    ap.add_argument("--val-episodes", type=int, default=10, help="validation episodes, scene D")
    ap.add_argument("--chain-length", type=int, default=5, help="tasks per episode, 1..5")
    ap.add_argument("--tasks", nargs="+", help="task names to draw from (default: all 34)")
    ap.add_argument("--ep-len", type=int, default=360, help="steps allowed per subtask")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="recording processes")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--embedding-model", help="sentence-embedding model (hub name or folder) for language.emb")
    ap.add_argument("--env", default="builtin", help="env backend that records: builtin, or calvin (the real calvin_env)")
    renamed(ap, "--scenes", "--scene (as env.scene in the evaluation)")
    args = ap.parse_args(argv)
    try:
        cfg = RecordConfig(
            out=args.out, scenes=parse_scenes(several(args.scene)), episodes=args.episodes,
            val_episodes=args.val_episodes, chain_length=args.chain_length, tasks=several(args.tasks),
            ep_len=args.ep_len, workers=args.workers, seed=args.seed, embedding_model=args.embedding_model,
            env=args.env,
        )
    except ValueError as e:
        ap.error(str(e))
    summary = record_dataset(cfg, progress=sys.stderr.isatty())
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
