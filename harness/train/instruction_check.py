"""Does a policy use its instruction, and does CALVIN's unseen phrasing cost it anything?

    python -m harness.train.instruction_check runs/train/x/checkpoints/last [--data PATH] [--samples 256]

The validation loss of a checkpoint on the same validation windows (the trainer's evenly spread subset,
no augmentation) three times: with the split's own instructions (CALVIN's evaluation phrasing in recorded
and CALVIN validation splits), with this project's first training phrasing of the same task, and with
the evaluation instruction of another task of the split (the next one in alphabetical order). A policy
that ignores language scores the same three times; one that understands the evaluation phrasing as
well as its training phrasings scores the first two alike. Then the training windows (each once, no
augmentation, the annotated instruction: `WindowOptions.unaugmented`): a validation loss above theirs is a gap
between the splits, not the instruction.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
from torch.utils.data import Dataset

from harness.data.config import DataConfig, build_dataset
from harness.ranks import DistInfo
from harness.tasks import eval_instruction, training_instruction
from harness.train.callbacks import validate, validation_indices
from harness.train.config import RENAMED
from harness.train.sources import SourceLosses

VARIANTS = ("own", "training_phrasing", "other_task")


class Reworded(Dataset):
    """A window dataset whose items carry another instruction: `variant` of VARIANTS."""

    def __init__(self, dataset: Any, variant: str):
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        self.dataset, self.variant = dataset, variant
        self.tasks = sorted(set(dataset.lang.task))
        if variant == "other_task" and len(self.tasks) < 2:
            raise ValueError("other_task needs a split with at least two tasks")

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.dataset[index]
        task = item["task"]
        if self.variant == "training_phrasing":
            item["instruction"] = training_instruction(task, 0)
        elif self.variant == "other_task":
            item["instruction"] = eval_instruction(self.tasks[(self.tasks.index(task) + 1) % len(self.tasks)])
        return item


def instruction_check(checkpoint: str, data_path: str | None = None, samples: int = 256, batch_size: int = 8,
                      precision: str = "bf16") -> dict[str, float]:
    """{"<variant>": validation loss, ..., "training_windows": loss} of the checkpoint (see the module doc)."""
    from agents.vla.checkpoint import load_checkpoint

    ckpt = load_checkpoint(checkpoint)
    # the windows follow the model; a checkpoint written before that also has the model's keys under data
    saved = {k: v for k, v in ckpt.config["data"].items() if f"data.{k}" not in RENAMED}
    data = DataConfig.from_dict({**saved, **({"path": data_path} if data_path else {})})
    spec = ckpt.model.cfg.window_spec()
    net = SourceLosses(ckpt.model)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else torch.autocast("cpu", enabled=False)

    def loss(dataset: Any) -> float:
        indices = validation_indices(len(dataset), samples)
        return validate(net, dataset, indices, batch_size, 0, DistInfo(), torch.device("cpu"), autocast, False)["val/loss"]

    val = build_dataset(data, spec, train=False, normalizer=ckpt.normalizer)
    out = {variant: loss(Reworded(val, variant)) for variant in VARIANTS}
    # the windows the model trained on (its tasks and shots), each once as recorded, like the validation windows
    out["training_windows"] = loss(build_dataset(data.unaugmented(), spec, train=True, normalizer=ckpt.normalizer))
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m harness.train.instruction_check", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", help="a checkpoint folder (e.g. runs/train/x/checkpoints/last)")
    ap.add_argument("--data", help="the dataset (default: the path in the checkpoint's config)")
    ap.add_argument("--samples", type=int, default=256, help="validation windows, evenly spread")
    ap.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    for name, value in instruction_check(args.checkpoint, args.data, args.samples, precision=args.precision).items():
        print(f"{name:<18} {value:.4f}")


if __name__ == "__main__":
    main()
