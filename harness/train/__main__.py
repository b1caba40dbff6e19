"""python -m harness.train [key=value ...] (vla-harness-train): train a VLA (configs/train.yaml; docs/TRAINING.md).

Under torchrun every rank runs this; rank 0's resolved config is the one all of them use. An invalid
configuration is reported in one line (exit status 2) before any work starts.
"""

from __future__ import annotations

import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from harness.config_errors import config_errors, exit_on_config_error, resolve_config
from harness.hydra_app import hydra_app, reject_renamed
from harness.lifetime import exit_without_teardown
from harness.ranks import dist_from_env
from harness.train.config import RENAMED, TrainConfig, store_train_defaults
from harness.train.sweep import check_job_folder
from harness.train.trainer import train


@hydra_app("train")
def train_app(cfg: DictConfig) -> float | None:
    with exit_on_config_error("harness.train"):
        resolved = resolve_config(cfg)
        with config_errors():
            config = TrainConfig.from_dict(resolved)
        overrides = list(HydraConfig.get().overrides.task)
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            with config_errors():
                check_job_folder(Path(config.output_dir), overrides, record=dist_from_env().is_main)
        summary = train(config, overrides=overrides)
    return summary.get("val_loss")  # a multirun's return value, for sweepers that optimise it


def main() -> None:
    with exit_on_config_error("harness.train"):
        reject_renamed(sys.argv[1:], RENAMED)
    store_train_defaults()
    train_app()
    if dist_from_env().active:  # a torchrun rank, done and its process group shut down (harness.lifetime)
        exit_without_teardown(0)


if __name__ == "__main__":
    main()
