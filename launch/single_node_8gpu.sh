#!/usr/bin/env bash
# One process driving the 8 GPUs of one node (no jax.distributed needed: a single controller).
#
#   bash launch/single_node_8gpu.sh configs/qwen25_3b.py runs/qwen25_3b --config.model.path=/models/Qwen2.5-3B-Instruct ...
#
# Before a long run, check the plan fits: python tools/memory_plan.py --config=CONFIG --devices=8
set -euo pipefail
CONFIG=${1:?usage: $0 CONFIG WORKDIR [--config.KEY=VALUE ...]}
WORKDIR=${2:?usage: $0 CONFIG WORKDIR [--config.KEY=VALUE ...]}
shift 2

# JAX preallocates 75% of each GPU by default; the memory plan budgets 44 of 48 GiB, so give it ~92%.
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}
# Overlap the fsdp all-gathers / reduce-scatters with compute.
export XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_enable_latency_hiding_scheduler=true"
export NCCL_DEBUG=${NCCL_DEBUG:-WARN}
export TOKENIZERS_PARALLELISM=false

exec python -m repirl_jax.launch --config="$CONFIG" --workdir="$WORKDIR" "$@"
