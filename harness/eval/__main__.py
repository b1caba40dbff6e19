"""python -m harness.eval [hydra overrides]: CALVIN's long-horizon evaluation (configs/eval.yaml).
python -m harness.eval compare RUN_A RUN_B [...]: paired comparison of finished runs (harness/eval/compare.py).

Under torchrun (`torchrun --nproc_per_node N -m harness.eval ...`) every rank runs its share of the
chains and rank 0 writes the merged results. An invalid configuration (a setting, the env it describes,
the agent's checkpoint, an output folder in use or holding another configuration's results) is reported
in one line (exit status 2) before the output folder is touched.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from harness.config_errors import config_errors, exit_on_config_error, resolve_config
from harness.eval.config import from_config
from harness.eval.evaluation import run_evaluation
from harness.lifetime import sigterm_exits


@hydra.main(config_path="../../configs", config_name="eval", version_base=None)
def main(cfg: DictConfig) -> None:
    sigterm_exits()  # `kill` stops the workers and releases the folder as Ctrl-C does; the same command resumes
    with exit_on_config_error("harness.eval"):
        resolved = resolve_config(cfg)
        with config_errors():
            settings, env, agent = from_config(resolved)
        run_evaluation(settings, env, agent, Path(resolved["output_dir"]), config=resolved)


if __name__ == "__main__":
    if sys.argv[1:2] == ["compare"]:  # a subcommand; anything else is hydra's (overrides never look like this)
        from harness.eval.compare import main as compare

        sys.exit(compare(sys.argv[2:]))
    main()
