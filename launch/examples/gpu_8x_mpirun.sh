#!/usr/bin/env bash
# 8-GPU nodes with Open MPI: one rank per GPU. Each rank takes local GPU (local rank mod GPUs on the node;
# runtime/device_placement.h reads OMPI_COMM_WORLD_LOCAL_RANK), NCCL carries the collectives (parallel.backend
# AUTO picks it for CUDA runs) and MPI only shares NCCL's unique id. bf16 autocast, fp32 master weights.
# hosts: one line per node, "node01 slots=8".
# usage: launch/examples/gpu_8x_mpirun.sh hosts NODES [--set ...]
#   e.g. launch/examples/gpu_8x_mpirun.sh hosts 2 --set parallel.sp=2
set -euo pipefail
hosts=$1 nodes=$2; shift 2
exec mpirun --hostfile "$hosts" -np $((8 * nodes)) --map-by ppr:8:node --bind-to numa \
  -x NCCL_SOCKET_IFNAME -x NCCL_IB_HCA -x NCCL_DEBUG \
  build/bin/nats train --config configs/gpt2_124m.textproto \
  --set train.device=CUDA --set train.precision=BF16 --set train.peak_gflops=989000 "$@"
