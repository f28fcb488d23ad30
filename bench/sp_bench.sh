#!/usr/bin/env bash
# Sequence parallelism with learned token types: bytes moved per layer and step (`retained` vs `full`) at
# T = 8k and 32k, step time with sp = 2 vs sp = 1 at T = 8k, and peak memory per rank. Writes a markdown table.
#  - CHECKPOINT: a trained NAtS model (its scorer supplies the types). Default: runs/sp_types/l2e-6/ckpt, which
#    this script trains first when it is missing (byte level, 4 layers, d 128, W 16, lambda 2e-6, 250 steps).
#  - T = 8k: forward + backward (packets forward, gradient replies back); T = 32k: forward only (the fused
#    backward's type-gradient part is O(T^2) time, minutes per step on 2 cores).
#  - sp = 1 runs with 2 threads, sp = 2 with 1 thread per rank (same 2 cores); sp = 4 is oversubscribed on this
#    machine, so only its bytes mean something.
# usage: bench/sp_bench.sh [BUILD_DIR] [CHECKPOINT] [DATA]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${1:-build}; CKPT=${2:-runs/sp_types/l2e-6/ckpt}; DATA=${3:-data/books_byte/val.tok}
bench="$BUILD_DIR/bench/sp_bench"
if [ ! -d "$CKPT" ]; then  # the learned-types model: byte level, 4 layers, d 128, T 1024, 250 steps (~5 min)
  [ -f data/books_byte/train.tok ] || "$BUILD_DIR/bin/nats" prepare --out_dir data/books_byte --tokenizer=byte
  "$BUILD_DIR/bin/nats" train --config configs/small_byte.textproto --set model.n_layer=4 --set model.d_model=128 \
    --set model.n_head=4 --set train.batch_size=4 --set train.micro_batch_size=4 --set train.steps=250 \
    --set optim.warmup_steps=10 --set train.eval_interval=0 --set train.eval_windows=16 --set model.attention=NATS \
    --set nats.window=16 --set nats.lambda=2e-6 --set train.run_dir="$(dirname "$CKPT")" > /dev/null
fi
mpi=(mpirun --allow-run-as-root --oversubscribe --bind-to none)
out=$(mktemp)
trap 'rm -f "$out"' EXIT
run() {  # np, args...
  local np=$1; shift
  if [ "$np" = 1 ]; then "$bench" --checkpoint "$CKPT" --data "$DATA" "$@" >> "$out"
  else "${mpi[@]}" -np "$np" "$bench" --checkpoint "$CKPT" --data "$DATA" "$@" >> "$out"; fi
}
run 1 --tokens 8192 --steps 2 --train --threads 2
for np in 2 4; do
  for mode in retained full; do
    run "$np" --tokens 8192 --steps 2 --train --threads 1 --mode "$mode"
    run "$np" --tokens 32768 --steps 1 --threads 1 --mode "$mode"
  done
done
cat "$out"
python3 - "$out" "$CKPT" <<'PY'
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
def find(t, sp, mode, train):
    return next(r for r in runs if r["tokens"] == t and r["sp"] == sp and r["train"] == train and (sp == 1 or r["mode"] == mode))
print(f"\nlearned types from {sys.argv[2]}; global fraction per layer on rank 0's chunk: "
      + ", ".join(f"{g:.3f}" for g in find(8192, 2, 'retained', True)["frac_global_rank0"]))
print("\n| T | sp | pass | bytes/layer/step retained (MB) | full (MB) | retained / full per layer | max |")
print("|---|---|---|---|---|---|---|")
for t, train in ((8192, True), (32768, False)):
    for sp in (2, 4):
        r, f = find(t, sp, "retained", train), find(t, sp, "full", train)
        ratios = [a / b for a, b in zip(r["bytes_per_layer_step"], f["bytes_per_layer_step"])]
        print(f"| {t} | {sp} | {'fwd+bwd' if train else 'fwd'} | "
              + " / ".join(f"{b/1e6:.2f}" for b in r["bytes_per_layer_step"]) + " | "
              + " / ".join(f"{b/1e6:.2f}" for b in f["bytes_per_layer_step"]) + " | "
              + " / ".join(f"{x:.3f}" for x in ratios) + f" | {max(ratios):.3f} |")
one, two, two_full = find(8192, 1, None, True), find(8192, 2, "retained", True), find(8192, 2, "full", True)
print("\n| T = 8192, fwd+bwd | step time (s) | vs sp = 1 | peak RSS per rank (MB) | vs sp = 1 |")
print("|---|---|---|---|---|")
for name, r in (("sp = 1, 2 threads", one), ("sp = 2 retained, 1 thread/rank", two), ("sp = 2 full, 1 thread/rank", two_full)):
    print(f"| {name} | {r['step_s']:.2f} | {r['step_s']/one['step_s']:.2f}x | {r['peak_rss_mb_max']:.0f} | "
          f"{r['peak_rss_mb_max']/one['peak_rss_mb_max']:.2f}x |")
PY
