"""python -m harness.doctor.probe CHECKPOINT [--data PATH] [--windows 256]: what a checkpoint's features say
about the scene (docs/TRAINING.md, "What the features read").

Linear probes, fit on the training split's frames and scored on the held-out split's, per part of the scene
(agents.vla.heads.SCENE_STATE_PARTS), for each place the scene could be read from:
- `lrn`: the [LRN] feature the policy head gets (after the instruction, and its FiLM);
- `image token`: the backbone's state at the frame's last image token, before the instruction;
- for the non-VLM CNN (agents/vla/scratch.py) the static camera's `keypoints` (its spatial softmax) and its
  `camera vector` (the CNN's output after its MLP).
A probe is ridge regression in closed form on standardised features, so what it scores is what the features
hold linearly, not what a probe could learn to extract. Beside them, the checkpoint's own probe (trained
with `loss.state_weight`) on training frames with their own words, the same frames with CALVIN's
evaluation wording of their task, and held-out frames: a probe that reads the scene on its own training
frames only when they come with their own sentence has learnt the training scenes by their words.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from agents.vla.checkpoint import Checkpoint, load_checkpoint
from agents.vla.heads import SCENE_STATE, SCENE_STATE_PARTS, SCENE_STATE_SCALE
from harness.data.sync import open_frames, spread
from harness.data.windows import FrameSource, WindowDataset, WindowOptions
from harness.doctor.model_checks import r2_by_part, window_batches
from harness.tasks import eval_instruction

RIDGE = 10.0  # the probes' L2 penalty, on standardised features


@dataclass
class Frames:
    """Per-frame features by where they were read, and the frames' targets (scene_obs units)."""

    features: dict[str, np.ndarray]
    true: np.ndarray
    own_probe: np.ndarray | None  # the checkpoint's probe on the frames, None without one


class _Captured:
    """The static camera's keypoints and vector out of the scratch CNN, by forward hooks (one call at a time)."""

    def __init__(self, model: torch.nn.Module, cameras: int):
        self.cameras, self.out = cameras, {}
        encoder = getattr(model.vlm, "vision_model", None)
        self.hooks = []
        if encoder is not None and hasattr(encoder, "keypoints"):
            self.hooks = [encoder.keypoints.register_forward_hook(self._keep("keypoints")),
                          encoder.register_forward_hook(self._keep("camera vector"))]

    def _keep(self, name: str):
        def hook(module, args, output):  # (S * cameras, D): the static camera first in every sequence
            self.out[name] = output.detach().float().reshape(-1, self.cameras, output.shape[-1])[:, 0].cpu().numpy()
        return hook

    def close(self) -> None:
        for h in self.hooks:
            h.remove()


def read_frames(ckpt: Checkpoint, source: FrameSource, windows: int, wording: str = "own") -> Frames:
    """Every frame of `windows` windows spread over the split; `wording="eval"`: each window's instruction
    replaced by CALVIN's evaluation instruction of its task."""
    model = ckpt.model.eval()
    spec = replace(model.cfg.window_spec(), scene_state=True)
    ds = WindowDataset(source, spec, ckpt.normalizer, WindowOptions(augment=False, drop_short_segments=True))
    captured = _Captured(model, len(model.cfg.cameras))
    rows: dict[str, list[np.ndarray]] = {}
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            for batch in _batches(ds, spread(list(range(len(ds))), windows), device, wording):
                read = {"lrn": model.features(batch), "image token": model.image_states(batch)}
                found = {k: v.float().cpu().numpy().reshape(-1, v.shape[-1]) for k, v in read.items()}
                found.update(captured.out)
                found["true"] = batch["scene_obs"].float().cpu().numpy()[..., SCENE_STATE].reshape(-1, len(SCENE_STATE))
                if model.state_probe is not None:  # on what it reads (loss.state_from), as scene_features gives it
                    own = model.state_probe(read["image token" if model.cfg.loss.state_from == "image" else "lrn"])
                    found["own probe"] = own.float().cpu().numpy().reshape(-1, len(SCENE_STATE)) / SCENE_STATE_SCALE
                for k, v in found.items():
                    rows.setdefault(k, []).append(v)
    finally:
        captured.close()
    out = {k: np.concatenate(v) for k, v in rows.items()}
    true, own = out.pop("true"), out.pop("own probe", None)
    return Frames(out, true, own)


def _batches(ds: WindowDataset, indices: list[int], device: torch.device, wording: str) -> Iterator[dict]:
    for batch in window_batches(ds, indices, device):
        if wording == "eval":
            batch["instruction"] = [eval_instruction(t) for t in batch["task"]]
        yield batch


def fit_ridge(x: np.ndarray, y: np.ndarray, penalty: float = RIDGE):
    """A linear map from standardised `x` to `y` (closed-form ridge, the intercept not penalised)."""
    mean, std = x.mean(0), x.std(0) + 1e-6
    design = np.c_[(x - mean) / std, np.ones(len(x))]
    reg = penalty * np.eye(design.shape[1])
    reg[-1, -1] = 0.0
    weights = np.linalg.solve(design.T @ design + reg, design.T @ y)
    return lambda z: np.c_[(z - mean) / std, np.ones(len(z))] @ weights


def probe_table(ckpt: Checkpoint, train: FrameSource, held_out: FrameSource, windows: int) -> dict[str, dict[str, float | None]]:
    """Row -> part -> R^2 on held-out frames (own probe rows: on the frames they name)."""
    seen, held = read_frames(ckpt, train, windows), read_frames(ckpt, held_out, windows)
    table = {}
    for name, x in seen.features.items():
        predict = fit_ridge(x, seen.true)
        table[f"{name} (a fresh probe, held-out frames)"] = r2_by_part({"pred": predict(held.features[name]), "true": held.true})
    if seen.own_probe is not None:
        reworded = read_frames(ckpt, train, windows, wording="eval")
        table["its own probe: training frames, their own words"] = r2_by_part({"pred": seen.own_probe, "true": seen.true})
        table["its own probe: training frames, CALVIN's evaluation wording"] = r2_by_part({"pred": reworded.own_probe, "true": reworded.true})
        table["its own probe: held-out frames"] = r2_by_part({"pred": held.own_probe, "true": held.true})
    return table


def render(table: dict[str, dict[str, float | None]], subject: str) -> str:
    parts = [name for name, _ in SCENE_STATE_PARTS]
    lines = [f"R^2 of the scene's parts: {subject}", "", "| read from | " + " | ".join(parts) + " |",
             "|---|" + "---:|" * len(parts)]
    for row, r2 in table.items():
        lines.append(f"| {row} | " + " | ".join("-" if r2[p] is None else f"{r2[p]:+.2f}" for p in parts) + " |")
    return "\n".join(lines + ["", "-: the part barely moves in those frames"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.doctor.probe", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("--data", help="dataset root with a training and a validation split; default: the checkpoint's data.path")
    ap.add_argument("--windows", type=int, default=256, help="windows read from each split (every frame of each)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.windows < 1:
        ap.error(f"--windows must be >= 1, got {args.windows}")
    try:
        ckpt = load_checkpoint(args.checkpoint)
    except (ValueError, OSError) as e:  # as the doctor's `checkpoint` line: the message names the folder and the problem
        ap.error(" ".join(str(e).split()))
    data_cfg = ckpt.config.get("data") or {}
    root = Path(args.data or data_cfg.get("path") or "")
    splits = (data_cfg.get("train_split", "training"), data_cfg.get("val_split", "validation"))
    missing = [s for s in splits if not (root / s).is_dir()]
    if missing:
        ap.error(f"{root}: no {' or '.join(missing)} split (pass --data: a dataset with both)")
    table = probe_table(ckpt, open_frames(root, splits[0]), open_frames(root, splits[1]), args.windows)
    print(json.dumps(table, indent=1) if args.json else render(table, f"{args.checkpoint} on {root}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
