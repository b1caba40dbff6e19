"""python -m harness.train [hydra overrides]: train a VLA (configs/train.yaml; docs/TRAINING.md).

Under torchrun every rank runs this; rank 0's resolved config is the one all of them use. An invalid
configuration is reported in one line (exit status 2) before any work starts.
"""

from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from harness.train.config import ConfigError, TrainConfig, config_errors
from harness.train.trainer import train


@hydra.main(config_path="../../configs", config_name="train", version_base=None)
def main(cfg: DictConfig) -> float | None:
    resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    try:
        with config_errors():
            config = TrainConfig.from_dict(resolved)
        summary = train(config, overrides=list(HydraConfig.get().overrides.task))
    except ConfigError as err:
        print(f"harness.train: invalid configuration: {err}", file=sys.stderr, flush=True)
        sys.exit(2)
    return summary.get("val_loss")  # a multirun's return value, for sweepers that optimise it


if __name__ == "__main__":
    main()
