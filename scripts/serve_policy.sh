#!/usr/bin/env bash
# Serve an agent over WebSocket (harness/serve; configs/serve.yaml), e.g.
#   scripts/serve_policy.sh agent=vla agent.checkpoint=runs/train/x/checkpoints/last port=8000
#   scripts/serve_policy.sh agent=vla agent.checkpoint=DIR protocol=vla_eval host=0.0.0.0 token=SECRET
# Evaluate against it: scripts/eval_calvin.sh agent=remote agent.url=ws://127.0.0.1:8000
source "$(dirname "$0")/_venv.sh"
exec python -m harness.serve "$@"
