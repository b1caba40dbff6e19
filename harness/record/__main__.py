"""`python -m harness.record OUT [options]`: record a CALVIN-format dataset with the scripted expert (resumable)."""

from __future__ import annotations

import argparse
import json
import os
import sys

from harness.record.recorder import RecordConfig, record_dataset


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.record", description=__doc__)
    ap.add_argument("out", help="dataset root (training/ and validation/ inside)")
    ap.add_argument("--scenes", default="D", help="scenes of the training split, e.g. D or ABC (validation is D)")
    ap.add_argument("--episodes", type=int, default=100, help="training episodes (task chains) per scene")
    ap.add_argument("--val-episodes", type=int, default=10, help="validation episodes, scene D")
    ap.add_argument("--chain-length", type=int, default=5, help="tasks per episode, 1..5")
    ap.add_argument("--tasks", help="comma-separated task names to draw from (default: all 34)")
    ap.add_argument("--ep-len", type=int, default=360, help="steps allowed per subtask")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="recording processes")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--embedding-model", help="sentence-embedding model (hub name or folder) for language.emb")
    ap.add_argument("--env", default="builtin", help="env backend that records: builtin, or calvin (the real calvin_env)")
    args = ap.parse_args(argv)
    cfg = RecordConfig(
        out=args.out, scenes=tuple(args.scenes), episodes=args.episodes, val_episodes=args.val_episodes,
        chain_length=args.chain_length, tasks=tuple(args.tasks.split(",")) if args.tasks else None,
        ep_len=args.ep_len, workers=args.workers, seed=args.seed, embedding_model=args.embedding_model,
        env=args.env,
    )
    summary = record_dataset(cfg, progress=sys.stderr.isatty())
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
