"""How far below its threshold tests/test_vla_model.py's overfitting test lands, over seeds and CPU kernels.

    python -m tests.overfit_margin                                                   # this CPU's kernels
    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python -m tests.overfit_margin  # an AVX2-only CPU's

Prints, per (backbone, head) of the test and per model/batch seed, the loss after 30/40/50/60 steps as a
fraction of the first loss, with the test's learning rate (the test asserts < 0.25 at step 60, seed 0).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from tests.vla_helpers import build_model, make_batch, save_tiny

CASES = (("tiny_llava", "lstm"), ("tiny_paligemma", "discrete"))


def ratios(folder: Path, name: str, head: str, seed: int, lr: float, steps: int) -> dict[int, float]:
    model = build_model(lambda _: folder, name, head=head, seed=seed)
    batch = make_batch(w=3, seed=seed)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    losses = []
    for _ in range(steps):
        loss = model(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return {k: round(losses[k - 1] / losses[0], 3) for k in range(30, steps + 1, 10)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--steps", type=int, default=60)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for name, head in CASES:
            folder = save_tiny(name, Path(tmp) / name)
            by_seed = {s: ratios(folder, name, head, s, args.lr, args.steps) for s in range(args.seeds)}
            worst = max(r[args.steps] for r in by_seed.values())
            print(f"{name} {head}: worst {worst} at step {args.steps}; by seed {json.dumps(by_seed)}", flush=True)


if __name__ == "__main__":
    main()
