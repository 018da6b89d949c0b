#!/usr/bin/env bash
# A multi-host Cloud TPU slice: the same command on every worker VM (JAX detects the pod and joins the
# workers through jax.distributed; one process per VM drives its local chips).
#
#   bash launch/tpu_pod.sh TPU_NAME ZONE configs/qwen25_3b.py gs://bucket/runs/qwen25_3b --config.mesh.fsdp=-1 ...
#
# The repository must be installed on every worker (same path; pip install -e ".[tpu]"), and the model and data
# paths readable from all of them. WORKDIR may be a gs:// path (orbax writes it collectively).
set -euo pipefail
TPU=${1:?usage: $0 TPU_NAME ZONE CONFIG WORKDIR [--config.KEY=VALUE ...]}
ZONE=${2:?usage: $0 TPU_NAME ZONE CONFIG WORKDIR [--config.KEY=VALUE ...]}
CONFIG=${3:?usage: $0 TPU_NAME ZONE CONFIG WORKDIR [--config.KEY=VALUE ...]}
WORKDIR=${4:?usage: $0 TPU_NAME ZONE CONFIG WORKDIR [--config.KEY=VALUE ...]}
shift 4
REPO_DIR=${REPO_DIR:-~/repirl_jax}
ARGS=$(printf ' %q' "$@")

# Overlap collectives with compute (latency-hiding scheduler) and let the TPU runtime use async collectives.
LIBTPU_FLAGS="--xla_tpu_enable_latency_hiding_scheduler=true --xla_enable_async_all_gather=true --xla_enable_async_reduce_scatter=true"

gcloud compute tpus tpu-vm ssh "$TPU" --zone="$ZONE" --worker=all --command="
  cd $REPO_DIR && export LIBTPU_INIT_ARGS='$LIBTPU_FLAGS' TOKENIZERS_PARALLELISM=false REPIRL_DISTRIBUTED=auto &&
  python -m repirl_jax.launch --config=$CONFIG --workdir=$WORKDIR$ARGS"
