"""`python -m harness.data.vl generate OUT --num-states N --seed S --scene D` and `... describe FILE` (vla-harness-vl-data).

Options follow harness/tool_args.py's convention (`--option VALUE`, several values one after another).
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys

from harness.data.vl.generate import generate
from harness.data.vl.llava import LlavaDataset
from harness.tool_args import renamed, several


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.data.vl", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    default = {k: v.default for k, v in inspect.signature(generate).parameters.items()}  # an option not given
    # keeps generate()'s default: one owner per setting
    g = sub.add_parser("generate", help="render sim scene states and write the VQA dataset (LLaVA-style JSON)",
                       argument_default=argparse.SUPPRESS)
    g.add_argument("out", help="new or empty output folder")
    g.add_argument("--num-states", type=int, required=True, help="scene states (images); ~9 questions each")
    g.add_argument("--seed", type=int, help=f"(default: {default['seed']})")
    g.add_argument("--scene", nargs="+", help="the scene(s) to cycle through, e.g. D, or A B C D "
                   f"(default: {default['scenes']})")
    g.add_argument("--val-fraction", type=float, help="fraction of the states (and of CALVIN's 192 start "
                   "conditions) held out for validation "
                   f"(default: {default['val_fraction']})")
    renamed(g, "--scenes", "--scene (as env.scene in the evaluation)")
    d = sub.add_parser("describe", help="read a LLaVA-style JSON file and print its examples per question type")
    d.add_argument("file")
    d.add_argument("--image-root", help="folder the image paths are relative to (default: the file's folder)")
    args = ap.parse_args(argv)

    if args.cmd == "generate":
        options = {k: v for k, v in vars(args).items() if k in ("seed", "val_fraction")}
        if "scene" in args:
            options["scenes"] = several(args.scene)
        meta = generate(args.out, args.num_states, progress=True, **options)
        print(json.dumps(meta, indent=1))
    else:
        print(json.dumps(LlavaDataset(args.file, args.image_root).describe(), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
