#!/usr/bin/env bash
# After a stop signal, `nats train` prints a command that resumes the run, and it works as printed; the summary
# of the resumed run counts this session only:
#  1. a single-rank run gets SIGTERM after step 2: exit 0, "saved step K; resume with `<command>`", where the
#     command is the binary as invoked, the same --config and --set flags, and --resume;
#  2. that command, run as printed, continues to the last step and its summary says
#     "resumed from step K: N-K steps in X s this session (step K -> N)" (and "resumed_from_step":K in JSON);
#  3. under mpirun (-np 1, SIGUSR1 to mpirun, which forwards it) the hint names the launcher to prefix.
# A tiny model (1 layer, d_model 32, 32-token context): ~0.1 s per step on one thread.
# usage: signal_resume_summary_test.sh NATS_BINARY SOURCE_DIR DATA_DIR
set -uo pipefail
NATS=$(realpath "$1")
SRC=$2
DATA=$3
WORK=$(mktemp -d /tmp/nats_signal_resume.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
STEPS=20
# The config path has a space and a --set value has brackets: the printed command must quote them.
cp "$SRC/configs/tiny.textproto" "$WORK/tiny config.textproto"
common=(--config "$WORK/tiny config.textproto" --set model.n_layer=1 --set model.d_model=32 --set model.n_head=2
        --set model.context_length=32 --set train.steps=$STEPS --set train.log_interval=1 --set train.eval_interval=0
        --set train.eval_windows=1 --set train.threads=1 --set "nats.layers=[0]"
        --set data.train_path="$DATA/books/train.tok" --set data.val_path="$DATA/books/val.tok")

# signal_after_step_2 PID RUN_DIR SIGNAL: waits (up to 60 s) for step 2's metrics line, then signals PID.
signal_after_step_2() {
  for _ in $(seq 1 1200); do
    if grep -q '"step":2,' "$2/metrics.jsonl" 2>/dev/null; then break; fi
    sleep 0.05
  done
  kill "-$3" "$1"
}

# 1. SIGTERM after step 2.
"$NATS" train "${common[@]}" --set train.run_dir="$WORK/run" >"$WORK/first.log" 2>&1 &
pid=$!
signal_after_step_2 "$pid" "$WORK/run" TERM
wait "$pid" || { echo "FAIL: nats train exited with $? after SIGTERM (want 0)"; tail -5 "$WORK/first.log"; exit 1; }
hint=$(grep "^stop requested" "$WORK/first.log") || { echo "FAIL: no stop message"; tail -5 "$WORK/first.log"; exit 1; }
echo "hint: $hint"
saved=$(sed -E 's/.*saved step ([0-9]+);.*/\1/' <<<"$hint")
command=$(sed -E 's/.*resume with `([^`]*)`.*/\1/' <<<"$hint")
[[ "$saved" =~ ^[0-9]+$ ]] && [ "$saved" -ge 2 ] && [ "$saved" -lt "$STEPS" ] ||
  { echo "FAIL: saved step '$saved' (want 2 <= K < $STEPS; did the run finish before the signal?)"; exit 1; }
case "$command" in
  "$NATS train --config "*"--set train.run_dir=$WORK/run --resume") ;;
  *) echo "FAIL: resume command is not '$NATS train --config ... --set train.run_dir=... --resume': $command"; exit 1 ;;
esac
grep -q "^summary: $saved steps in" "$WORK/first.log" || { echo "FAIL: fresh summary"; grep summary "$WORK/first.log"; exit 1; }

# 2. The command as printed.
eval "$command" >"$WORK/resumed.log" 2>&1 || { echo "FAIL: the printed command failed ($?)"; tail -5 "$WORK/resumed.log"; exit 1; }
want="summary: resumed from step $saved: $((STEPS - saved)) steps in [0-9]+\.[0-9] s this session \(step $saved -> $STEPS\),"
summary=$(grep "^summary:" "$WORK/resumed.log")
echo "resumed: $summary"
grep -qE "^$want" <<<"$summary" || { echo "FAIL: resumed summary does not match '$want'"; exit 1; }
grep -q "\"kind\":\"summary\",\"steps\":$STEPS,\"resumed_from_step\":$saved," "$WORK/resumed.log" ||
  { echo "FAIL: JSON summary"; grep '"summary"' "$WORK/resumed.log"; exit 1; }

# 3. Under mpirun: the hint says which launcher to prefix (Open MPI forwards SIGUSR1 to the ranks).
if command -v mpirun >/dev/null; then
  mpirun --allow-run-as-root --oversubscribe --bind-to none -np 1 "$NATS" train "${common[@]}" \
    --set train.run_dir="$WORK/mpi" >"$WORK/mpi.log" 2>&1 &
  pid=$!
  signal_after_step_2 "$pid" "$WORK/mpi" USR1
  wait "$pid" || { echo "FAIL: mpirun nats train exited with $? after SIGUSR1"; tail -5 "$WORK/mpi.log"; exit 1; }
  hint=$(grep "^stop requested" "$WORK/mpi.log")
  echo "mpirun hint: $hint"
  grep -q -- "--resume\` prefixed by the same launcher and its flags (e.g. \`mpirun -np 1 ...\`)" <<<"$hint" ||
    { echo "FAIL: the hint under mpirun does not name the launcher"; exit 1; }
fi
echo "signal hint resumes as printed; resumed summary counts this session"
