#!/usr/bin/env bash
# A setup error on one rank only (its node lacks the training shard) stops every rank at once with that
# rank's message, instead of the other ranks waiting in their next collective until parallel.timeout_s.
# The two ranks run the same config (so the config-hash check agrees) from different working directories;
# data.train_path is relative and exists only in rank 0's. parallel.timeout_s = 60 is far above the 20 s
# allowed here, so the test passes only when Trainer::Create agrees on the setup outcome
# (parallel::AgreeOnStatus) before its first collective that could wait for the failed rank.
# usage: setup_error_multirank.sh NATS_BINARY SOURCE_DIR DATA_DIR
set -euo pipefail
NATS=$(realpath "$1")
SRC=$2
DATA=$3
LIMIT=20
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
WORK=$(mktemp -d /tmp/nats_setup_error.XXXXXX)
MPIRUN_PID=""
cleanup() {
  if [ -n "$MPIRUN_PID" ]; then kill -KILL "$MPIRUN_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$WORK/rank0" "$WORK/rank1"
ln -s "$DATA/books/train.tok" "$WORK/rank0/train.tok"  # rank 1's directory has no train.tok

T0=$(date +%s.%N)
mpirun --oversubscribe --bind-to none -np 2 sh -c 'cd '"$WORK"'/rank$OMPI_COMM_WORLD_RANK && exec "$@"' sh \
  "$NATS" train --config "$SRC/configs/tiny.textproto" \
  --set model.n_layer=1 --set model.d_model=32 --set model.n_head=2 --set model.context_length=32 \
  --set train.batch_size=2 --set train.steps=5 --set train.threads=1 --set checkpoint.save_final=false \
  --set data.train_path=train.tok --set data.val_path="$DATA/books/val.tok" \
  --set train.run_dir="$WORK/run" --set parallel.timeout_s=60 \
  >"$WORK/out.log" 2>"$WORK/err.log" &
MPIRUN_PID=$!
rc=0
for _ in $(seq 1 $((LIMIT * 10))); do
  kill -0 "$MPIRUN_PID" 2>/dev/null || break
  sleep 0.1
done
if kill -0 "$MPIRUN_PID" 2>/dev/null; then
  echo "FAIL: the job still runs ${LIMIT}s after start although rank 1 cannot open its shard"
  tail -5 "$WORK/err.log"
  exit 1
fi
wait "$MPIRUN_PID" || rc=$?
MPIRUN_PID=""
ELAPSED=$(echo "$(date +%s.%N) - $T0" | bc)
echo "setup error on rank 1: job ended after ${ELAPSED}s with exit code $rc"
echo "--- the agreed error (every rank prints it)"
grep -m1 "failed:" "$WORK/err.log" || grep -v '^\s*$' "$WORK/err.log" | tail -6
[ "$rc" -ne 0 ] || { echo "FAIL: exit code 0"; exit 1; }
# Both ranks report the same agreed error naming the rank and the missing file.
n=$(grep -c "rank 1 of 2 failed: train.tok: no such token shard" "$WORK/err.log" || true)
[ "$n" -ge 2 ] || { echo "FAIL: expected the agreed message (naming rank 1 and train.tok) from both ranks, got $n"; exit 1; }
echo "PASS"
