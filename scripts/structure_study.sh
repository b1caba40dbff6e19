#!/usr/bin/env bash
# The structure study (harness/train/study.py; docs/TRAINING.md#the-structure-study): decoder-only vs
# cross-attention VLM vs a non-VLM baseline, one-step vs interleaved vs policy-head history, continuous vs
# discrete actions, each row trained under the same CPU budget on the same data, then evaluated (single-task
# success on the 8 tasks, CALVIN's chains). Resumable row by row: the same command again carries on.
#   scripts/structure_study.sh runs/e2e/shards_D runs/study --budget-cpu-s 300 --episodes 5 --chains 100
#   scripts/structure_study.sh ... --rows decoder_policy_head scratch_policy_head     # some rows
source "$(dirname "$0")/_venv.sh"
exec python -m harness.train.study "$@"
