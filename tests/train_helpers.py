"""Shared pieces of the tests/test_train_*.py files: a CALVIN-layout dataset, the real configs composed with
tiny-model overrides, in-process and command-line training runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

torch.set_num_threads(1)  # the test machine is shared: one thread per test process

from transformers.utils import logging as hf_logging  # noqa: E402

from tests.calvin_layout import write_dataset  # noqa: E402

hf_logging.disable_progress_bar()
hf_logging.set_verbosity_error()

ROOT = Path(__file__).resolve().parents[1]
# PYTHONFAULTHANDLER: a process that aborts (SIGABRT from C++) prints its Python threads' stacks first
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "PYTHONFAULTHANDLER": "1"}

# A ~0.1M-parameter tiny LLaVA (32 px images: 4 image tokens), window 4, chunk 2 (so the action masks of
# windows at segment ends differ), no augmentation or dropout, fp32 on CPU, no DataLoader workers.
TINY = [
    "trainer=cpu",
    "++model.backbone.tiny_size={hidden:64,vision_hidden:32,image_size:32,layers:1,vision_layers:1}",
    "model.head.hidden_size=32", "model.head.num_layers=1",
    "model.window_size=4", "model.chunk_size=2",  # the data's windows follow the model
    "data.augment=false", "trainer.num_workers=0", "trainer.progress=false", "trainer.log_every=1",
    "trainer.val_samples=16", "optim.lr=1e-3", "optim.warmup_epochs=0", "optim.warmup_steps=2",
]


@pytest.fixture(scope="session")
def dataset(tmp_path_factory) -> Path:
    """tests/calvin_layout's dataset: 86 training windows of 4 frames, 18 validation windows."""
    return write_dataset(tmp_path_factory.mktemp("calvin"))


def compose(data: Path, out: Path, *overrides: str) -> dict[str, Any]:
    """configs/train.yaml with the tiny overrides, resolved, as the hydra app would see it."""
    from harness.train.config import compose_config

    return compose_config([*TINY, f"data.path={data}", f"output_dir={out}", "run_name=test", *overrides])


def config(data: Path, out: Path, *overrides: str):
    from harness.train.config import TrainConfig

    return TrainConfig.from_dict(compose(data, out, *overrides))


def train_here(data: Path, out: Path, *overrides: str) -> dict[str, Any]:
    """Train in this process; returns the summary."""
    from harness.train import train

    return train(config(data, out, *overrides))


def cli(data: Path, out: Path, *overrides: str) -> list[str]:
    """The `python -m harness.train` arguments of the same run (hydra's run folder is the output folder)."""
    return [*TINY, f"data.path={data}", f"hydra.run.dir={out}", "run_name=test", *overrides]


AVX2_ONLY = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}  # oneDNN and ATen as on an AVX2-only CPU


def run_cli(args: list[str], torchrun: int = 0, timeout: float = 300,
            env: dict[str, str] | None = None, succeeds: bool = True) -> subprocess.CompletedProcess:
    """`python -m harness.train ARGS` (under torchrun with `torchrun` processes); asserts its success unless told
    that it fails."""
    # --standalone: torchrun binds its own free port and keeps it (a port picked here and freed could be taken by
    # a test in another pytest-xdist worker before torchrun binds it)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(torchrun)] \
        if torchrun else [sys.executable]
    proc = subprocess.run([*launcher, "-m", "harness.train", *args], cwd=ROOT, env={**ENV, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout)
    assert (proc.returncode == 0) == succeeds, _failure_report(proc)
    return proc


def _failure_report(proc: subprocess.CompletedProcess) -> str:
    """What a failed run printed: first the lines that name an error anywhere in stderr (a rank that aborts
    prints its C++ reason long before torchrun's summary, which alone fills the tail), then both tails."""
    marks = ("terminate called", "what():", "Error", "error:", "Abort", "Fatal", "Killed")
    named = [line for line in proc.stderr.splitlines() if any(m in line for m in marks)]
    return ("\n".join(list(dict.fromkeys(named))[:40]) + "\n--- stdout tail ---\n" + proc.stdout[-3000:]
            + "\n--- stderr tail ---\n" + proc.stderr[-3000:])


def metrics(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def losses(out: Path) -> dict[int, float]:
    """step -> training loss, from metrics.jsonl."""
    return {r["step"]: r["loss"] for r in metrics(out) if "loss" in r}


def weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


# the distributed tests' run: augmentation on, so the per-item seeds must give any rank layout the same samples;
# 13 validation windows: 4 batches of 2 on rank 0, 3 on rank 1
DIST_RUN = ("trainer.max_steps=4", "trainer.ckpt_every=2", "trainer.val_every=2", "data.augment=true",
            "trainer.val_samples=13")


@pytest.fixture(scope="module")
def single(dataset, tmp_path_factory) -> Path:
    """DIST_RUN in one process with the global batch of 2 ranks x 2."""
    out = tmp_path_factory.mktemp("single")
    run_cli(cli(dataset, out, *DIST_RUN, "trainer.batch_size=4"))
    return out


def assert_close_weights(a: Path, b: Path, atol: float) -> None:
    """The `last` checkpoints of two runs hold the same tensors (to `atol`)."""
    wa, wb = weights(a / "checkpoints" / "last"), weights(b / "checkpoints" / "last")
    assert wa.keys() == wb.keys()
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], rtol=0, atol=atol, msg=name)
