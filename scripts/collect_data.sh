#!/usr/bin/env bash
# Record a CALVIN-format dataset with the scripted expert in the built-in scene (or --env calvin: the
# real calvin_env, scripts/install_calvin_env.sh).
#   scripts/collect_data.sh OUT [--scene D] [--episodes 100] [--val-episodes 10] [--chain-length 5]
#                               [--tasks open_drawer,close_drawer,...] [--workers N] [--seed 0] [--env builtin]
# Running the same command again continues an interrupted recording.
source "$(dirname "$0")/_venv.sh"
exec python -m harness.record "$@"
