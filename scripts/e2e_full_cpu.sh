#!/usr/bin/env bash
# All 34 CALVIN tasks from pixels on 2 CPU cores, in one command (docs/TRAINING.md, "Learning all 34 tasks
# on CPU"):
#   1. record chains of 5 subtasks from random valid starts with the scripted expert: scene D for the D->D
#      run, scenes A, B, C for the ABC->D run (validation: scene D, CALVIN's evaluation instructions); convert
#      each to shards with the images at the model's input size, then drop the per-frame files;
#   2. train configs/experiment/e2e_full_cpu.yaml on the 34-task chains, while a second process evaluates each
#      kept checkpoint on CALVIN's first 100 chains (the learning curve);
#   3. evaluate the last checkpoint in scene D: CALVIN's 1000 chains (report.md: per position and per
#      task) and single-task success from random valid start states, with the failure analysis.
# D->D runs all three steps first, then ABC->D.
# Every step resumes where it stopped when the same command is run again (recording, conversion,
# training and every evaluation carry on from what they have written).
#   scripts/e2e_full_cpu.sh [OUT=runs/e2e_full]
# Sizes (environment): CHAINS_D (600), CHAINS_ABC (per scene, 200), VAL_CHAINS (50), CURVE_EVERY (4000; 0: no
# learning curve, and the training takes both cores), CURVE_CHAINS (100), EVAL_CHAINS (CALVIN's 1000),
# SINGLE_TASK_EPISODES (20), SPLITS ("D ABC"; "D" for the D->D run alone), KEEP_NPZ=1 keeps the per-frame
# recordings; TRAIN_ARGS: more overrides for every training (e.g. TRAIN_ARGS="trainer.max_steps=4
# trainer.ckpt_every=2"; docs/TRAINING.md has a quick check of every step and a run sized to one sitting).
SPLITS="${SPLITS:-D ABC}"
for split in $SPLITS; do
    case "$split" in D|ABC) ;; *) echo "e2e_full_cpu.sh: SPLITS holds '$split'; the splits are D and ABC" >&2; exit 2 ;; esac
done
source "$(dirname "$0")/_venv.sh"
source "$(dirname "$0")/_hydra.sh"
OUT="${1:-runs/e2e_full}"
CHAINS_D="${CHAINS_D:-600}"
CHAINS_ABC="${CHAINS_ABC:-200}"
VAL_CHAINS="${VAL_CHAINS:-50}"
CURVE_EVERY="${CURVE_EVERY:-4000}"
CURVE_CHAINS="${CURVE_CHAINS:-100}"
EVAL_CHAINS="${EVAL_CHAINS:-1000}"
EPISODES="${SINGLE_TASK_EPISODES:-20}"
read -r -a TRAIN_ARGS <<< "${TRAIN_ARGS:-}"
RESIZE=(rgb_static=96 rgb_gripper=96)   # the model's input size (configs/experiment/e2e_full_cpu.yaml)
export OMP_NUM_THREADS=1                 # training and the curve's evaluation share the two cores
mkdir -p "$OUT"

# same_recipe NAME SETTINGS: what split NAME's recording and training are made of, kept in OUT/recipe_NAME.txt by
# its first run; a later run with other values is refused: shards are never recorded again and a training
# resumes with whatever overrides it is given, so it would mix two recipes in one folder without a word. Until
# the training's first checkpoint nothing of its overrides is kept, so TRAIN_ARGS may change until then (a
# first run stopped by a mistyped override is carried on with the right one)
same_recipe() {
    local file="$OUT/recipe_$1.txt" old
    old="$(cat "$file" 2> /dev/null)" || old="$2"
    if [ "$old" != "$2" ] && [ "${old%%TRAIN_ARGS=*}" = "${2%%TRAIN_ARGS=*}" ] \
            && [ -z "$(find "$OUT/train_$1/checkpoints" -maxdepth 1 -name 'step_*' -print -quit 2> /dev/null)" ]; then
        echo "e2e_full_cpu.sh: $OUT's $1 training has no checkpoint yet: it starts with the new TRAIN_ARGS" >&2
        old="$2"
    fi
    if [ "$old" != "$2" ]; then
        echo "e2e_full_cpu.sh: $OUT's $1 run was started with other settings; run it with the same ones, use" \
             "another folder, or remove $file to carry it on with the new ones" >&2
        echo "  then: $(cat "$file")" >&2
        echo "  now:  $2" >&2
        exit 2
    fi
    printf '%s\n' "$2" > "$file"
}
# the training and the curve end with this script, even when it is killed outright (SIGKILL: no trap runs), so
# that the next run is not refused by a training left behind; setpriv is util-linux's
END_WITH_SCRIPT=()
if setpriv --pdeathsig TERM true 2> /dev/null; then END_WITH_SCRIPT=(setpriv --pdeathsig TERM); fi  # util-linux >= 2.33

# record NAME RECORD_ARGS...: harness.record's chains -> $OUT/shards_NAME (the per-frame npz files are
# deleted once converted)
record() {
    local name="$1" data="$OUT/data_$1" shards="$OUT/shards_$1"
    shift
    if [ ! -d "$shards" ]; then
        python -m harness.record "$data" "$@" --workers 2 --seed 0
        # a conversion stopped half-way keeps the splits it finished (--resume) and converts the rest, unless the
        # recording it converted was made again since
        if ! cmp -s "$data/recording.json" "$shards.partial/recording.json"; then rm -rf "$shards.partial"; fi
        mkdir -p "$shards.partial"
        cp "$data/recording.json" "$shards.partial/"
        python -m harness.data convert "$data" "$shards.partial" --resume --frames annotated --workers 2 --resize "${RESIZE[@]}"
        sync   # the shards on disk before they are named complete and their recording deleted
        mv "$shards.partial" "$shards"
        sync
    fi
    [ "${KEEP_NPZ:-0}" = 1 ] || rm -rf "$data"   # also when a run was stopped between the two
}

# train NAME: the recipe on shards_NAME, with the learning curve evaluated beside it (CURVE_EVERY=0: without,
# the training then on both cores)
train() {
    local name="$1" run="$OUT/train_$1" threads=1
    if [ "$CURVE_EVERY" = 0 ]; then threads=2; fi
    OMP_NUM_THREADS=$threads ${END_WITH_SCRIPT[@]+"${END_WITH_SCRIPT[@]}"} python -m harness.train +experiment=e2e_full_cpu data.path="$(hq "$OUT/shards_$name")" \
        run_name="e2e_full_$name" hydra.run.dir="$(hq "$run")" trainer.progress=false "${TRAIN_ARGS[@]}" &
    local trainer=$!
    # a stopped script stops its background processes (they ignore Ctrl-C), so that the next run is the
    # only writer of the run folder
    trap "kill $trainer 2>/dev/null" INT TERM EXIT
    if [ "$CURVE_EVERY" = 0 ]; then
        wait "$trainer"
        trap - INT TERM EXIT
        return
    fi
    until [ -d "$run/checkpoints" ] || ! kill -0 "$trainer" 2>/dev/null; do sleep 30; done
    # and until the trainer holds the run folder (its lock file names it): on a rerun checkpoints/ is there from the
    # start, and a curve started before the trainer would take the old summary of a run given more steps for its end
    until [ "$(cat "$run/.writer.lock" 2>/dev/null)" = "$trainer" ] || ! kill -0 "$trainer" 2>/dev/null; do sleep 2; done
    # one single-thread worker (OMP_NUM_THREADS caps harness.eval's threads): with the training's one thread,
    # one process a core; a second worker, or a worker's second thread, would spin on busy cores
    ${END_WITH_SCRIPT[@]+"${END_WITH_SCRIPT[@]}"} python -m harness.train.curve "$run" --follow --every "$CURVE_EVERY" --chains "$CURVE_CHAINS" --workers 1 &
    local curve=$!
    trap "kill $trainer $curve 2>/dev/null" INT TERM EXIT
    wait "$trainer"   # a failed training stops the script (set -e), and the trap stops the curve too
    wait "$curve"
    trap - INT TERM EXIT
}
# evaluate NAME: CALVIN's 1000 chains (the first EVAL_CHAINS) and the 34 single tasks in scene D, with the failure
# analysis of the single tasks (failures.md beside their report)
evaluate() {
    local name="$1" ckpt="$OUT/train_$1/checkpoints/last"
    python -m harness.eval agent=vla agent.checkpoint="$(hq "$ckpt")" num_chains="$EVAL_CHAINS" workers=2 videos=3 progress=false \
        output_dir="$(hq "$OUT/eval_${name}_chains")"
    # every failed episode keeps its trace (clips of every 30th frame) for the failure analysis
    python -m harness.eval agent=vla agent.checkpoint="$(hq "$ckpt")" mode=single_task episodes_per_task="$EPISODES" \
        workers=2 videos=0 video_failures=100000 video_stride=30 progress=false output_dir="$(hq "$OUT/eval_${name}_single_task")"
    python -m harness.eval failures "$OUT/eval_${name}_single_task" > /dev/null
}

# D->D first: its figures (the issue's goal) come hours before ABC->D's, and a run stopped half-way has them
for split in $SPLITS; do
    case "$split" in
        D) same_recipe D "CHAINS_D=$CHAINS_D VAL_CHAINS=$VAL_CHAINS TRAIN_ARGS=${TRAIN_ARGS[*]}"
           record D --scene D --episodes "$CHAINS_D" --val-episodes "$VAL_CHAINS" --chain-length 5 --balance ;;
        ABC) same_recipe ABC "CHAINS_ABC=$CHAINS_ABC VAL_CHAINS=$VAL_CHAINS TRAIN_ARGS=${TRAIN_ARGS[*]}"
             record ABC --scene A B C --episodes "$CHAINS_ABC" --val-episodes "$VAL_CHAINS" --chain-length 5 --balance ;;
    esac
    train "$split"
    evaluate "$split"
done
