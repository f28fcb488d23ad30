#!/usr/bin/env bash
# Training throughput of configs/small: ours (`nats train`) vs an equivalent PyTorch eager loop
# (bench/pytorch_peer_train.py: same model, batch, context, optimizer, threads), run back to back by this
# script on the same machine. Prints a markdown table with the ratio ours / PyTorch.
# usage: bench/train_throughput.sh [BUILD_DIR] [STEPS] [THREADS]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${1:-build}; STEPS=${2:-12}; THREADS=${3:-2}
out=$(mktemp -d); trap 'rm -rf "$out"' EXIT
"$BUILD_DIR/bin/nats" train --config configs/small.textproto --set train.steps="$STEPS" \
  --set train.eval_interval=0 --set train.eval_windows=1 --set train.log_interval=1 \
  --set train.threads="$THREADS" --set train.run_dir="$out/ours" > "$out/ours.log"
/usr/bin/python3 bench/pytorch_peer_train.py --shard data/books/train.tok --layers 6 --d 192 --heads 6 --ctx 1024 \
  --batch 8 --micro 4 --steps "$STEPS" --threads "$THREADS" > "$out/peer.json"
/usr/bin/python3 - "$out" "$THREADS" <<'PY'
import json, sys
out, threads = sys.argv[1], sys.argv[2]
rows = [r for r in map(json.loads, open(f"{out}/ours/metrics.jsonl")) if r["kind"] == "train" and r["step"] > 2]
tokens = 8 * 1024 * len(rows)
ours = tokens / sum(8 * 1024 / r["tokens_per_s"] for r in rows)
peer = json.load(open(f"{out}/peer.json"))
print("| implementation | tokens/s | ratio vs PyTorch |")
print("|---|---|---|")
print(f"| nats train (LibTorch C++) | {ours:.0f} | {ours / peer['tokens_per_s']:.2f} |")
print(f"| PyTorch {peer['torch']} eager (Python) | {peer['tokens_per_s']:.0f} | 1.00 |")
print(f"\nconfigs/small: {peer['params'] / 1e6:.1f}M parameters, batch 8 x 1024 tokens (micro 4), {threads} threads, "
      f"steps 3..N timed")
PY
