#!/usr/bin/env bash
# Issue-3 experiment: dense vs NAtS (W = 16, lambda in {1e-9, 1e-8, 1e-7}) on the demo books, same token budget.
# Byte-level model (the GPT-2 output layer would dominate a CPU budget): 4 layers, d 128, 4 heads, T 1024,
# batch 4 x 1024 tokens, STEPS steps. Two runs at a time, one thread each. Then `nats eval` of each checkpoint
# (forward: perplexity, bits per byte, KV fraction of the inference types).
# usage: bench/nats_sweep.sh [BUILD_DIR] [STEPS] [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${1:-build}; STEPS=${2:-100}; OUT=${3:-runs/sweep}
nats="$BUILD_DIR/bin/nats"
[ -f data/books_byte/train.tok ] || "$nats" prepare --out_dir data/books_byte --tokenizer=byte
mkdir -p "$OUT"
common=(--config configs/small_byte.textproto --set model.n_layer=4 --set model.d_model=128 --set model.n_head=4
        --set train.batch_size=4 --set train.micro_batch_size=4 --set train.steps="$STEPS" --set optim.warmup_steps=10
        --set train.eval_interval=0 --set train.eval_windows=16 --set train.log_interval=10 --set train.threads=1)
run() {  # name, extra flags...
  local name=$1; shift
  "$nats" train "${common[@]}" --set train.run_dir="$OUT/$name" --overwrite "$@" > "$OUT/$name.log" 2>&1
}
run dense &
run nats_1e-9 --set model.attention=NATS --set nats.window=16 --set nats.lambda=1e-9 &
wait
run nats_1e-8 --set model.attention=NATS --set nats.window=16 --set nats.lambda=1e-8 &
run nats_1e-7 --set model.attention=NATS --set nats.window=16 --set nats.lambda=1e-7 &
wait
for name in dense nats_1e-9 nats_1e-8 nats_1e-7; do
  "$nats" eval --checkpoint "$OUT/$name/ckpt" --mode forward --windows 16 --threads 2 > "$OUT/$name.eval" 2>&1
done
/usr/bin/python3 - "$OUT" "$STEPS" <<'PY'
import json, sys
out, steps = sys.argv[1], int(sys.argv[2])
print(f"| run | val ppl (bytes) | val bits/byte | mask density (train) | KV fraction (train types) | KV fraction (inference, eval) | step time vs dense |")
print("|---|---|---|---|---|---|---|")
rows = {}
for name in ["dense", "nats_1e-9", "nats_1e-8", "nats_1e-7"]:
    recs = [json.loads(l) for l in open(f"{out}/{name}/metrics.jsonl")]
    train = [r for r in recs if r["kind"] == "train"]
    ev = [r for r in recs if r["kind"] == "eval"][-1]
    last = train[-1]
    tok_s = sum(r["tokens_per_s"] for r in train[1:]) / max(1, len(train) - 1)
    dens = sum(last.get("mask_density", [1.0])) / len(last.get("mask_density", [1.0]))
    kv = sum(last.get("kv_fraction", [1.0])) / len(last.get("kv_fraction", [1.0]))
    e = [json.loads(l) for l in open(f"{out}/{name}.eval") if l.startswith("{")][-1]
    rows[name] = (ev["val_ppl"], ev["val_bpb"], dens, kv, e["kv_fraction"], tok_s)
base = rows["dense"][5]
for name, (ppl, bpb, dens, kv, kv_inf, tok_s) in rows.items():
    print(f"| {name} | {ppl:.3f} | {bpb:.4f} | {dens:.3f} | {kv:.3f} | {kv_inf:.3f} | {base / tok_s:.2f}x |")
print(f"\nbudget: {steps} steps x 4 x 1024 = {steps * 4096:,} byte tokens per run")
PY
