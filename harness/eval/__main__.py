"""python -m harness.eval [hydra overrides]: CALVIN's long-horizon evaluation (configs/eval.yaml).
python -m harness.eval compare RUN_A RUN_B [...]: paired comparison of finished runs (harness/eval/compare.py).

Under torchrun (`torchrun --nproc_per_node N -m harness.eval ...`) every rank runs its share of the
chains and rank 0 writes the merged results.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from harness.eval.config import from_config
from harness.eval.distributed import dist_from_env
from harness.eval.evaluation import run_evaluation


@hydra.main(config_path="../../configs", config_name="eval", version_base=None)
def main(cfg: DictConfig) -> None:
    resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    settings, env, agent = from_config(resolved)
    output_dir = Path(resolved["output_dir"])
    if dist_from_env().is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(resolved)))
    run_evaluation(settings, env, agent, output_dir, config=resolved)


if __name__ == "__main__":
    if sys.argv[1:2] == ["compare"]:  # a subcommand; anything else is hydra's (overrides never look like this)
        from harness.eval.compare import main as compare

        sys.exit(compare(sys.argv[2:]))
    main()
