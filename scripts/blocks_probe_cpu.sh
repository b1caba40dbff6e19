#!/usr/bin/env bash
# The block-task probes behind configs/experiment/e2e_full_cpu_vlm.yaml (docs/TRAINING.md, "Learning all 34
# tasks on CPU"): what makes block tasks learnable from pixels on 2 CPU cores.
#   1. record chains of four block tasks from random valid starts in built-in scene D (scripted expert);
#   2. convert them to shards, images stored at each probed input size;
#   3. train each named variant (e2e_full_cpu_vlm + its overrides) for the same number of steps, at a constant
#      learning rate after the warmup: the same command with more STEPS extends a probe exactly;
#   4. evaluate each: single-task success on the three tasks a start condition allows (place_in_slider
#      needs a block in the hand first: its validation loss is in the run's metrics).
# Every step resumes where it stopped when the command is run again.
#   scripts/blocks_probe_cpu.sh OUT STEPS EPISODES VARIANT...     e.g. runs/probe 4000 10 base96 grip96
source "$(dirname "$0")/_venv.sh"
source "$(dirname "$0")/_hydra.sh"
OUT="${1:?OUT}"; STEPS="${2:?STEPS}"; EPISODES="${3:?EPISODES}"; shift 3
TASKS=lift_red_block_table,push_blue_block_left,rotate_pink_block_right,place_in_slider
EVAL_TASKS=lift_red_block_table,push_blue_block_left,rotate_pink_block_right
TRAIN_CHAINS="${TRAIN_CHAINS:-130}"
export OMP_NUM_THREADS=1   # one thread per process: the variants run side by side on a shared machine

declare -A DATA=(          # shards per variant: the stored sizes are the model's input sizes
    [base96]=s96 [grip96]=s96 [res128]=s128 [res192]=s192 [patch8]=s96 [wide]=s96 [noaug]=s96 [grip64]=s64
)
declare -A RESIZE=(
    [s64]="rgb_static=64 rgb_gripper=64" [s96]="rgb_static=96 rgb_gripper=96"
    [s128]="rgb_static=128 rgb_gripper=128" [s192]="rgb_static=192 rgb_gripper=192"
)
declare -A OVERRIDES=(   # on top of e2e_full_cpu_vlm (static + gripper camera at 96 px)
    [base96]="model.use_gripper_image=false"
    [grip96]=""
    [grip64]="++model.backbone.tiny_size={image_size:64} data.rgb_pad=3 data.gripper_pad=3"
    [res128]="model.use_gripper_image=false ++model.backbone.tiny_size={image_size:128} data.rgb_pad=6"
    [res192]="model.use_gripper_image=false ++model.backbone.tiny_size={image_size:192} data.rgb_pad=10"
    [patch8]="++model.backbone.tiny_size={patch_size:8}"
    [wide]="++model.backbone.tiny_size={hidden:384,vision_hidden:192}"
    [noaug]="data.augment=false"
)

for variant in "$@"; do : "${DATA[$variant]:?unknown variant $variant}"; done
mkdir -p "$OUT"
# the recording and the conversions one command at a time: variants started side by side (docs/TRAINING.md)
# share them, and a second recorder or converter of the same folder would be refused or clear the other's work
exec 9> "$OUT/.prepare.lock"
flock 9
python -m harness.record "$OUT/data" --scene D --episodes "$TRAIN_CHAINS" --val-episodes 20 --chain-length 5 \
    --tasks "$TASKS" --workers 2 --seed 0
for variant in "$@"; do
    shards="$OUT/${DATA[$variant]}"
    if [ ! -d "$shards" ]; then  # converted aside, then moved: a conversion stopped half-way starts again
        rm -rf "$shards.partial"
        # shellcheck disable=SC2086
        python -m harness.data convert "$OUT/data" "$shards.partial" --frames annotated --workers 2 \
            --resize ${RESIZE[${DATA[$variant]}]}
        mv "$shards.partial" "$shards"
    fi
done
flock -u 9
for variant in "$@"; do
    shards="$OUT/${DATA[$variant]}"
    # shellcheck disable=SC2086
    python -m harness.train +experiment=e2e_full_cpu_vlm data.path="$(hq "$shards")" run_name="$variant" hydra.run.dir="$(hq "$OUT/$variant")" \
        trainer.max_steps="$STEPS" trainer.progress=false optim.schedule=constant ${OVERRIDES[$variant]}
    # two workers of one torch thread each (a single worker gets two, which spin on busy cores: docs/TRAINING.md)
    python -m harness.eval agent=vla agent.checkpoint="$(hq "$OUT/$variant/checkpoints/last")" mode=single_task \
        "tasks=[$EVAL_TASKS]" episodes_per_task="$EPISODES" workers=2 videos=0 video_failures=3 progress=false \
        output_dir="$(hq "$OUT/$variant/eval_single_task_$STEPS")"
done
