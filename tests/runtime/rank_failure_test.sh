#!/usr/bin/env bash
# A rank that dies or hangs mid-training ends the whole mpirun job quickly, with a non-zero exit code.
#   kill: SIGKILL rank 1 of 2 during training; Open MPI notices the dead process, the job ends in seconds.
#   stop: SIGSTOP rank 1 of 2 (a hung node) with parallel.timeout_s = 5; rank 0's next collective times out,
#         prints one line naming the collective and parallel.timeout_s, and MPI_Abort ends every rank (the
#         stopped one included) within timeout + a few seconds.
# Prints the measured detection time ("detect_seconds=...": from the signal to mpirun's exit).
# usage: rank_failure_test.sh kill|stop NATS_BINARY SOURCE_DIR DATA_DIR
set -euo pipefail
MODE=$1
NATS=$(realpath "$2")
SRC=$3
DATA=$4
TIMEOUT_S=5
case "$MODE" in
  kill) SIGNAL=KILL LIMIT=8 ;;
  stop) SIGNAL=STOP LIMIT=$((TIMEOUT_S + 6)) ;;
  *) echo "usage: $0 kill|stop NATS SRC DATA" >&2; exit 2 ;;
esac
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
WORK=$(mktemp -d /tmp/nats_rank_failure.XXXXXX)
MPIRUN_PID=""
cleanup() {
  # Whatever happens, leave no stopped or orphaned rank behind.
  for f in "$WORK"/pid.*; do
    [ -f "$f" ] || continue
    p=$(cat "$f")
    kill -CONT "$p" 2>/dev/null || true
    kill -KILL "$p" 2>/dev/null || true
  done
  if [ -n "$MPIRUN_PID" ]; then kill -KILL "$MPIRUN_PID" 2>/dev/null || true; fi
  if [ -z "${KEEP_WORK:-}" ]; then rm -rf "$WORK"; else echo "kept $WORK"; fi
}
trap cleanup EXIT

# A model small enough that a step takes milliseconds; steps enough that training outlives the test.
mpirun --oversubscribe --bind-to none -np 2 sh -c 'echo $$ > '"$WORK"'/pid.$OMPI_COMM_WORLD_RANK; exec "$@"' sh \
  "$NATS" train --config "$SRC/configs/tiny.textproto" \
  --set model.n_layer=1 --set model.d_model=32 --set model.n_head=2 --set model.context_length=32 \
  --set train.batch_size=2 --set train.steps=1000000 --set train.log_interval=1 --set train.eval_interval=0 \
  --set train.eval_windows=1 --set train.threads=1 --set checkpoint.save_final=false \
  --set data.train_path="$DATA/books/train.tok" --set data.val_path="$DATA/books/val.tok" \
  --set train.run_dir="$WORK/run" --set parallel.timeout_s=$TIMEOUT_S \
  >"$WORK/out.log" 2>"$WORK/err.log" &
MPIRUN_PID=$!

# Training is under way once rank 1 has logged a few steps.
for _ in $(seq 1 600); do
  if [ -f "$WORK/run/metrics.rank1.jsonl" ] && [ "$(grep -c '"kind":"train"' "$WORK/run/metrics.rank1.jsonl")" -ge 3 ]; then
    break
  fi
  if ! kill -0 "$MPIRUN_PID" 2>/dev/null; then
    echo "FAIL: the job ended before training started"; cat "$WORK/err.log"; exit 1
  fi
  sleep 0.1
done
[ -f "$WORK/pid.1" ] || { echo "FAIL: rank 1 never started training"; cat "$WORK/err.log"; exit 1; }

VICTIM=$(cat "$WORK/pid.1")
T0=$(date +%s.%N)
kill -"$SIGNAL" "$VICTIM"
# Wait for mpirun, at most 4x the limit (then the test fails instead of hanging).
rc=0
for _ in $(seq 1 $((LIMIT * 40))); do
  kill -0 "$MPIRUN_PID" 2>/dev/null || break
  sleep 0.1
done
if kill -0 "$MPIRUN_PID" 2>/dev/null; then
  echo "FAIL: the job still runs $((LIMIT * 4)) s after SIG$SIGNAL of rank 1"
  tail -5 "$WORK/err.log"
  exit 1
fi
wait "$MPIRUN_PID" || rc=$?
MPIRUN_PID=""
T1=$(date +%s.%N)
DETECT=$(echo "$T1 - $T0" | bc)
echo "mode=$MODE detect_seconds=$DETECT exit_code=$rc (limit ${LIMIT}s, parallel.timeout_s=$TIMEOUT_S)"
echo "--- stderr of the job (last lines)"
tail -8 "$WORK/err.log"

if [ "$rc" -eq 0 ]; then echo "FAIL: the job exited 0 after SIG$SIGNAL of a rank"; exit 1; fi
if [ "$(echo "$DETECT > $LIMIT" | bc)" -eq 1 ]; then
  echo "FAIL: the job took ${DETECT}s to end, more than ${LIMIT}s"
  exit 1
fi
if [ "$MODE" = stop ]; then
  grep -q "parallel.timeout_s" "$WORK/err.log" || { echo "FAIL: no message naming parallel.timeout_s"; exit 1; }
  grep -q "did not complete within 5s on rank 0 of 2" "$WORK/err.log" ||
    { echo "FAIL: the message does not name the rank and the timeout"; exit 1; }
  grep -q "aborting the job" "$WORK/err.log" || { echo "FAIL: no abort line"; exit 1; }
  # Open MPI continues and SIGTERMs it; it exits at its next wait, when it sees its launcher gone.
  for _ in $(seq 1 30); do kill -0 "$VICTIM" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$VICTIM" 2>/dev/null; then echo "FAIL: the stopped rank outlived the job by 3 s"; exit 1; fi
fi
echo "PASS"
