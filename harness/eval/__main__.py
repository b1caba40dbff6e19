"""python -m harness.eval [key=value ...] (vla-harness-eval): CALVIN's long-horizon evaluation (configs/eval.yaml).
python -m harness.eval compare RUN_A RUN_B [...] (vla-harness-compare): paired comparison of finished runs (harness/eval/compare.py).
python -m harness.eval failures RUN: how far the policy got in its failed subtasks (harness/eval/failures.py).

Under torchrun (`torchrun --nproc_per_node N -m harness.eval ...`) every rank runs its share of the
chains and rank 0 writes the merged results. An invalid configuration (a setting, the env it describes,
the agent's checkpoint, an output folder in use or holding another configuration's results) is reported
in one line (exit status 2) before the output folder is touched.
"""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig

from harness.config_errors import config_errors, exit_on_config_error, resolve_config
from harness.eval.config import RENAMED, EvalConfig, store_eval_defaults
from harness.eval.evaluation import run_evaluation
from harness.hydra_app import hydra_app, reject_renamed
from harness.lifetime import sigterm_exits


@hydra_app("eval")
def evaluate(cfg: DictConfig) -> None:
    sigterm_exits()  # `kill` stops the workers and releases the folder as Ctrl-C does; the same command resumes
    with exit_on_config_error("harness.eval"):
        resolved = resolve_config(cfg)
        with config_errors():
            config = EvalConfig.from_dict(resolved)
        run_evaluation(config.settings, config.env, config.agent, Path(config.output_dir), config=resolved)


def main() -> None:
    if sys.argv[1:2] == ["compare"]:  # a subcommand; anything else is hydra's (overrides never look like this)
        from harness.eval.compare import main as compare

        sys.exit(compare(sys.argv[2:]))
    if sys.argv[1:2] == ["failures"]:
        from harness.eval.failures import main as failures

        sys.exit(failures(sys.argv[2:]))
    with exit_on_config_error("harness.eval"):
        reject_renamed(sys.argv[1:], RENAMED)
    store_eval_defaults()
    evaluate()


if __name__ == "__main__":
    main()
