#!/usr/bin/env bash
# The end-to-end proof on CPU, in one command:
#   1. record demos of CALVIN's eight articulated tasks with the scripted expert in built-in scene D;
#   2. train a tiny VLA from scratch (configs/experiment/e2e_cpu.yaml: ~55 minutes on 2 CPU cores);
#   3. evaluate it with the harness: single-task success on the eight tasks, then CALVIN's 1000 chains.
# Every step resumes where it stopped when the command is run again.
#   scripts/e2e_cpu.sh [OUT=runs/e2e] [EPISODES]   (EPISODES: single-task episodes per task; else the
#   environment's SINGLE_TASK_EPISODES, as scripts/e2e_full_cpu.sh; else 20)
source "$(dirname "$0")/_venv.sh"
source "$(dirname "$0")/_hydra.sh"
OUT="${1:-runs/e2e}"
EPISODES="${2:-${SINGLE_TASK_EPISODES:-20}}"
TASKS=open_drawer,close_drawer,move_slider_left,move_slider_right,turn_on_led,turn_off_led,turn_on_lightbulb,turn_off_lightbulb

python -m harness.record "$OUT/data_D" --scene D --episodes 160 --val-episodes 16 --chain-length 3 \
    --tasks "$TASKS" --workers 2 --seed 0
if [ ! -d "$OUT/shards_D" ]; then  # converted aside, then moved: a conversion stopped half-way starts again
    rm -rf "$OUT/shards_D.partial"
    python -m harness.data convert "$OUT/data_D" "$OUT/shards_D.partial" --frames annotated --workers 2
    mv "$OUT/shards_D.partial" "$OUT/shards_D"
fi
python -m harness.train +experiment=e2e_cpu data.path="$(hq "$OUT/shards_D")" run_name=e2e_cpu hydra.run.dir="$(hq "$OUT/train")"
CKPT="$OUT/train/checkpoints/last"
python -m harness.eval agent=vla agent.checkpoint="$(hq "$CKPT")" mode=single_task "tasks=[$TASKS]" \
    episodes_per_task="$EPISODES" workers=2 videos=2 output_dir="$(hq "$OUT/eval_single_task")"
python -m harness.eval agent=vla agent.checkpoint="$(hq "$CKPT")" num_chains=1000 workers=2 videos=3 \
    output_dir="$(hq "$OUT/eval_chains")"
