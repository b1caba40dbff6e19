#!/usr/bin/env bash
# CALVIN long-horizon evaluation. With no arguments: the scripted expert on the built-in scene D,
# 100 of CALVIN's benchmark chains with 2 workers (a few minutes on a laptop), printing CALVIN's table.
# Any hydra override of configs/eval.yaml can follow, e.g.
#   scripts/eval_calvin.sh agent=vla agent.checkpoint=runs/train/x/checkpoint agent.device=cuda num_chains=1000
#   scripts/eval_calvin.sh agent=random env=builtin env.scene=B num_chains=20 workers=2 output_dir=/tmp/eval
#   scripts/eval_calvin.sh mode=single_task episodes_per_task=10
#   scripts/eval_calvin.sh suite=robust num_chains=200     # the robustness suite (docs/ROBUSTNESS.md, configs/robust.yaml)
# The same command again resumes in its output_dir (overwrite=true starts afresh).
source "$(dirname "$0")/_venv.sh"
module=harness.eval
args=()
for arg in "$@"; do
    if [[ "$arg" == "suite=robust" ]]; then module=harness.eval.robust; else args+=("$arg"); fi
done
exec python -m "$module" ${args[@]+"${args[@]}"}
