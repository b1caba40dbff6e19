#!/usr/bin/env bash
# The two-stage recipe on CPU with the tiny Idefics3 VLA (docs/vl_cotraining.md), in one command:
#   1. generate the sim VQA set (1000 states of scene D);
#   2. stage 1: vision-language only, from scratch; VQA accuracy vs. the majority baseline;
#   3. stage 2 from stage 1's weights, twice on the same action data: co-trained (3 action : 1 VL
#      micro-batches) and not (3 action micro-batches); the same action batches per step in both;
#   4. VQA accuracy of both (forgetting) and single-task success on the eight articulated tasks.
# The action data is scripts/e2e_cpu.sh's (its shards). Every step resumes where it stopped when run again.
#   scripts/vl_cotrain_cpu.sh [OUT=runs/vl] [SHARDS=runs/e2e/shards_D] [STAGE2_STEPS=2000] [EPISODES=20]
source "$(dirname "$0")/_venv.sh"
source "$(dirname "$0")/_hydra.sh"
OUT="${1:-runs/vl}"
SHARDS="${2:-runs/e2e/shards_D}"
STAGE2_STEPS="${3:-2000}"
EPISODES="${4:-20}"
TASKS=open_drawer,close_drawer,move_slider_left,move_slider_right,turn_on_led,turn_off_led,turn_on_lightbulb,turn_off_lightbulb
VL="$OUT/vl_sim"

if [ ! -f "$VL/meta.json" ]; then  # generated aside, then moved: a generation stopped half-way starts again
    rm -rf "$VL.partial"
    python -m harness.data.vl generate "$VL.partial" --num-states 1000 --seed 0 --scene D
    rm -rf "$VL" && mv "$VL.partial" "$VL"   # an earlier generation without meta.json is incomplete
fi
python -m harness.train "+experiment=[e2e_cpu,vl_stage1]" sources.vl.options.path="$(hq "$VL")" data.path="$(hq "$SHARDS")" \
    trainer.max_steps=2000 trainer.batch_size=16 trainer.val_every=250 trainer.val_samples=null \
    optim.warmup_steps=100 run_name=stage1 hydra.run.dir="$(hq "$OUT/stage1")"
STAGE1="$OUT/stage1/checkpoints/last"
python -m harness.eval.vqa "$STAGE1" "$VL" --out "$OUT/vqa_stage1.json"

for RUN in cotrain action_only; do
    if [ "$RUN" = cotrain ]; then MIX=(sources=action_vl sources.vl.options.path="$(hq "$VL")" trainer.grad_accum=4)
    else MIX=(sources=action trainer.grad_accum=3); fi
    python -m harness.train "+experiment=[e2e_cpu,vl_stage2]" init_from="$(hq "$STAGE1")" \
        "${MIX[@]}" data.path="$(hq "$SHARDS")" trainer.max_steps="$STAGE2_STEPS" trainer.val_every=500 \
        trainer.ckpt_every=500 optim.warmup_steps=100 run_name="$RUN" hydra.run.dir="$(hq "$OUT/$RUN")"
    python -m harness.eval.vqa "$OUT/$RUN/checkpoints/last" "$VL" --out "$OUT/vqa_$RUN.json"
    python -m harness.eval agent=vla agent.checkpoint="$(hq "$OUT/$RUN/checkpoints/last")" mode=single_task \
        "tasks=[$TASKS]" episodes_per_task="$EPISODES" workers=2 videos=1 output_dir="$(hq "$OUT/eval_$RUN")"
done
python -m harness.eval.vqa compare stage1="$OUT/vqa_stage1.json" cotrain="$OUT/vqa_cotrain.json" \
    action_only="$OUT/vqa_action_only.json"
