#!/usr/bin/env bash
# Train a VLA: python -m harness.train with hydra overrides (configs/train.yaml; docs/TRAINING.md).
#   scripts/train.sh run_name=x data.path=/data/task_D_D                       # one process (CPU or one GPU)
#   scripts/train.sh --nproc 8 run_name=x model=llava trainer.device=cuda      # torchrun, 8 processes (DDP)
#   scripts/train.sh --nproc 8 --nnodes 2 --node_rank 0 --master_addr host0 --master_port 29500 run_name=x ...
#   scripts/train.sh -m +sweep=robovlms_grid run_name=grid                     # hydra multirun -> sweep table
#   scripts/train.sh run_name=x                                                # again: resumes run x
# Launcher options (before or among the overrides): --nproc N (--nproc_per_node N), --nnodes, --node_rank,
# --master_addr, --master_port, --rdzv_backend, --rdzv_endpoint, --rdzv_id, --max_restarts; or the
# environment variables NPROC_PER_NODE, NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT.
# --dry-run prints the command instead of running it. Everything else goes to hydra.
set -euo pipefail
nproc="${NPROC_PER_NODE:-}"
launch=()
[ -n "${NNODES:-}" ] && launch+=(--nnodes "$NNODES")
[ -n "${NODE_RANK:-}" ] && launch+=(--node_rank "$NODE_RANK")
[ -n "${MASTER_ADDR:-}" ] && launch+=(--master_addr "$MASTER_ADDR")
[ -n "${MASTER_PORT:-}" ] && launch+=(--master_port "$MASTER_PORT")
args=()
dry_run=false
while [ $# -gt 0 ]; do
    case "$1" in
        --nproc|--nproc_per_node) nproc="$2"; shift 2 ;;
        --nproc=*|--nproc_per_node=*) nproc="${1#*=}"; shift ;;
        --nnodes|--node_rank|--master_addr|--master_port|--rdzv_backend|--rdzv_endpoint|--rdzv_id|--max_restarts)
            launch+=("$1" "$2"); shift 2 ;;
        --nnodes=*|--node_rank=*|--master_addr=*|--master_port=*|--rdzv_backend=*|--rdzv_endpoint=*|--rdzv_id=*|--max_restarts=*)
            launch+=("$1"); shift ;;
        --dry-run) dry_run=true; shift ;;
        *) args+=("$1"); shift ;;
    esac
done
if [ -n "$nproc" ] || [ ${#launch[@]} -gt 0 ]; then
    rendezvous_given=false
    for ((i = 0; i < ${#launch[@]}; i++)); do
        a="${launch[$i]}"
        case "$a" in
            --master_addr*|--master_port*|--rdzv_*|--node_rank*) rendezvous_given=true ;;
            --nnodes=*) [ "${a#*=}" = 1 ] || rendezvous_given=true ;;
            --nnodes) [ "${launch[$((i + 1))]}" = 1 ] || rendezvous_given=true ;;
        esac
    done
    # one node with no rendezvous given: torchrun picks a free port itself (--standalone would override a
    # port or rendezvous given, and cannot meet other nodes)
    $rendezvous_given || launch=(--standalone "${launch[@]+"${launch[@]}"}")
    cmd=(python -m torch.distributed.run --nproc_per_node "${nproc:-1}" "${launch[@]}" -m harness.train)
else
    cmd=(python -m harness.train)
fi
cmd+=("${args[@]+"${args[@]}"}")
if $dry_run; then
    printf '%q ' "${cmd[@]}"
    echo
    exit 0
fi
source "$(dirname "$0")/_venv.sh"
exec "${cmd[@]}"
