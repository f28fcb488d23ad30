#!/usr/bin/env bash
# Checkpoint/resume with real processes:
#  1. mpirun -np 2 with ZeRO-1: 12 steps straight == 6 steps + checkpoint + resume + 6 steps (losses equal);
#  2. reshard: the np 2 / ZeRO-1 checkpoint of step 6 resumed by 1 rank (plain AdamW) and by 4 ranks (ZeRO-1)
#     continues on the same global batches: losses follow the straight run to float tolerance;
#  3. SIGTERM in the middle of training: exit 0 with a checkpoint that resumes exactly (bit-identical losses).
# usage: resume_multirank.sh NATS_BINARY SOURCE_DIR DATA_DIR
set -euo pipefail
nats=$1 src=$2 data=$3
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
mpi=(mpirun --allow-run-as-root --oversubscribe --bind-to none)
common=(--config "$src/configs/tiny.textproto" --set model.n_layer=1 --set train.steps=12 --set train.log_interval=1
        --set train.eval_interval=0 --set train.eval_windows=2 --set checkpoint.interval_steps=6
        --set checkpoint.keep_last=0 --set data.train_path="$data/books/train.tok"
        --set data.val_path="$data/books/val.tok")

"${mpi[@]}" -np 2 "$nats" train "${common[@]}" --set parallel.zero_stage=1 --set train.run_dir="$out/straight" > /dev/null
"${mpi[@]}" -np 2 "$nats" train "${common[@]}" --set parallel.zero_stage=1 --set train.run_dir="$out/split" > /dev/null
rm -rf "$out/split/ckpt/step_00000012" "$out/split/ckpt/latest"   # as if killed right after step 6's save
cp -r "$out/split" "$out/one" && cp -r "$out/split" "$out/four"
"${mpi[@]}" -np 2 "$nats" train "${common[@]}" --set parallel.zero_stage=1 --set train.run_dir="$out/split" --resume \
  > "$out/split.log"
grep -q "resumed from .*step_00000006" "$out/split.log"
"$nats" train "${common[@]}" --set train.run_dir="$out/one" --resume > "$out/one.log"
grep -q "resumed from" "$out/one.log"
"${mpi[@]}" -np 4 "$nats" train "${common[@]}" --set parallel.zero_stage=1 --set train.run_dir="$out/four" --resume \
  > /dev/null

# 3. SIGTERM: a single-rank run, stopped after its third step.
sig=(--config "$src/configs/tiny_nats.textproto" --set model.n_layer=1 --set train.steps=16 --set train.log_interval=1
     --set train.eval_interval=0 --set train.eval_windows=2 --set checkpoint.save_final=false
     --set data.train_path="$data/books/train.tok" --set data.val_path="$data/books/val.tok")
"$nats" train "${sig[@]}" --set train.run_dir="$out/sig_straight" > /dev/null
"$nats" train "${sig[@]}" --set train.run_dir="$out/sig" > "$out/sig.log" &
pid=$!
for _ in $(seq 1 600); do   # poll (up to 60 s) for the third step's log line, then signal
  if grep -q '"step":3,' "$out/sig/metrics.jsonl" 2>/dev/null; then break; fi
  sleep 0.1
done
kill -TERM "$pid"
wait "$pid" || { echo "SIGTERM: nats train exited with $? instead of 0"; exit 1; }
grep -q "stop requested" "$out/sig.log" || { echo "SIGTERM: no stop message"; cat "$out/sig.log"; exit 1; }
"$nats" train "${sig[@]}" --set train.run_dir="$out/sig" --resume > /dev/null

python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
def losses(path):
    return {r["step"]: r["loss"] for r in map(json.loads, open(path)) if r["kind"] == "train"}
straight = losses(f"{out}/straight/metrics.jsonl")
def compare(name, other, tol, steps):
    worst = max(abs(straight[s] - other[s]) for s in steps)
    print(f"{name}: max |loss difference| over steps {steps[0]}..{steps[-1]} = {worst:.2e}")
    assert worst <= tol, f"{name}: {worst} > {tol}"
split = losses(f"{out}/split/metrics.jsonl")
compare("np2 zero1 resume (same world)", split, 0.0, list(range(1, 13)))
compare("reshard np2 -> np1", losses(f"{out}/one/metrics.jsonl"), 2e-3, list(range(7, 13)))
compare("reshard np2 -> np4", losses(f"{out}/four/metrics.jsonl"), 2e-3, list(range(7, 13)))
sig_straight, sig = losses(f"{out}/sig_straight/metrics.jsonl"), losses(f"{out}/sig/metrics.jsonl")
assert sorted(sig) == list(range(1, 17)), sorted(sig)
diff = [s for s in sig if sig[s] != sig_straight[s]]
assert not diff, f"SIGTERM + resume differs from the straight run at steps {diff}"
print("SIGTERM at step >= 3 + resume: 16 losses bit-identical to the straight run")
PY
