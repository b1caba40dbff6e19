"""`python -m harness.data.vl generate OUT --num-states N --seed S --scenes D` and `... describe FILE`."""

from __future__ import annotations

import argparse
import json
import sys

from harness.data.vl.generate import generate
from harness.data.vl.llava import LlavaDataset


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.data.vl", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate", help="render sim scene states and write the VQA dataset (LLaVA-style JSON)")
    g.add_argument("out", help="new or empty output folder")
    g.add_argument("--num-states", type=int, required=True, help="scene states (images); ~9 questions each")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--scenes", default="D", help="scenes to cycle through: D, ABCD or A,B,C,D")
    g.add_argument("--val-fraction", type=float, default=0.1, help="fraction of the states held out for validation")
    d = sub.add_parser("describe", help="read a LLaVA-style JSON file and print its examples per question type")
    d.add_argument("file")
    d.add_argument("--image-root", help="folder the image paths are relative to (default: the file's folder)")
    args = ap.parse_args(argv)

    if args.cmd == "generate":
        meta = generate(args.out, args.num_states, args.seed, args.scenes, args.val_fraction, progress=True)
        print(json.dumps(meta, indent=1))
    else:
        print(json.dumps(LlavaDataset(args.file, args.image_root).describe(), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
