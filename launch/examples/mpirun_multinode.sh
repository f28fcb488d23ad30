#!/usr/bin/env bash
# Multi-node training with Open MPI: one rank per core group (CPU) or per GPU.
# hosts: one line per node, e.g. "node01 slots=8". Threads per rank default to cores / ranks on the node.
# Ranks fill one node before the next (--map-by slot), so the sp ranks of one sequence (adjacent world ranks,
# parallel/process_grid.h) share a node and its fast links; data parallelism spans the nodes.
# usage: launch/examples/mpirun_multinode.sh hosts 32 configs/gpt2_124m.textproto [--set parallel.sp=4 ...]
set -euo pipefail
hosts=$1 np=$2 config=$3; shift 3
exec mpirun --hostfile "$hosts" -np "$np" --map-by slot --bind-to none \
  -x OMP_NUM_THREADS -x NCCL_SOCKET_IFNAME -x NCCL_IB_DISABLE \
  build/bin/nats train --config "$config" "$@"
