#!/usr/bin/env bash
# Data-parallel numbers for configs/small on this machine: tokens/s of 2 ranks x 1 thread vs 1 rank x 2 threads,
# time in communication, bytes all-reduced per step vs the gradient size, and how much of the all-reduce ran
# while backward was still running (overlap). Prints a markdown table.
# usage: bench/dp_bench.sh [BUILD_DIR] [STEPS]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${1:-build}; STEPS=${2:-8}
out=$(mktemp -d); trap 'rm -rf "$out"' EXIT
common=(--config configs/small.textproto --set train.steps="$STEPS" --set train.eval_interval=0
        --set train.eval_windows=1 --set train.log_interval=1 --set checkpoint.save_final=false)
"$BUILD_DIR/bin/nats" train "${common[@]}" --set train.threads=2 --set train.run_dir="$out/one" > /dev/null
mpirun --allow-run-as-root --oversubscribe --bind-to none -np 2 "$BUILD_DIR/bin/nats" train "${common[@]}" \
  --set train.threads=1 --set train.run_dir="$out/two" > /dev/null
/usr/bin/python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
def train(path):
    return [r for r in map(json.loads, open(path)) if r["kind"] == "train" and r["step"] > 2]
one, two = train(f"{out}/one/metrics.jsonl"), train(f"{out}/two/metrics.jsonl")
tok = 8 * 1024
def rate(rows): return tok * len(rows) / sum(tok / r["tokens_per_s"] for r in rows)
step_s = sum(tok / r["tokens_per_s"] for r in two) / len(two)
comm = sum(r["dp_comm_s"] for r in two) / len(two)
wait = sum(r["dp_wait_s"] for r in two) / len(two)
bytes_ = two[-1]["dp_bytes_reduced"]
params = 12317568
print("| setup | tokens/s | ratio |")
print("|---|---|---|")
print(f"| 1 rank x 2 threads | {rate(one):.0f} | 1.00 |")
print(f"| 2 ranks x 1 thread (MPI, bucketed all-reduce) | {rate(two):.0f} | {rate(two) / rate(one):.2f} |")
print()
print(f"- step time (2 ranks): {step_s * 1000:.0f} ms; all-reduce in flight {comm * 1000:.0f} ms "
      f"({100 * comm / step_s:.1f}% of the step); step blocked waiting for it {wait * 1000:.0f} ms "
      f"({100 * wait / step_s:.1f}%)")
print(f"- overlap (1 - wait / in flight): {100 * (1 - wait / comm):.0f}%")
print(f"- bytes all-reduced per step per rank: {bytes_ / 1e6:.1f} MB vs gradient size {params * 4 / 1e6:.1f} MB "
      f"({bytes_ / (params * 4):.2f}x)")
PY
