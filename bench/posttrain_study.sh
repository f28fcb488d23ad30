#!/usr/bin/env bash
# The post-training study of docs/posttraining.md and BENCHMARKS.md: a dense byte-level model trained here is
# exported to Hugging Face layout, imported back, and its NAtS scorers are post-trained by self-distillation to
# KV targets 0.25 and 0.10; then perplexity on held-out books and passkey accuracy of dense attention, the
# post-trained NAtS cache, and StreamingLLM and H2O at the NAtS cache's size.
#
# usage: bench/posttrain_study.sh [OUT_DIR]     (default runs/posttrain; every step resumes or is skipped when done)
# Prepares the corpus when missing (bench/make_passkey_corpus.py + nats prepare). Results: OUT_DIR/results.md
# (the tables), OUT_DIR/*.jsonl (every eval line), OUT_DIR/*.log.
set -euo pipefail
cd "$(dirname "$0")/.."
NATS=${NATS:-build/bin/nats}
OUT=${1:-runs/posttrain}
WINDOWS=${WINDOWS:-8}        # held-out windows of 513 bytes for perplexity (decode mode: token by token)
SAMPLES=${SAMPLES:-10}       # passkey prompts per (length, depth)
LENGTHS=${LENGTHS:-256,512}
DEPTHS=${DEPTHS:-0,0.25,0.5,0.75,1}
mkdir -p "$OUT"

if [ ! -d data/passkey_byte/train ]; then
  python3 bench/make_passkey_corpus.py --out data/passkey_src --docs 20000
  "$NATS" prepare --input data/passkey_src/train.jsonl --tokenizer byte --out data/passkey_byte --val_fraction 0.02
fi
if [ ! -d data/passkey_only/train ]; then
  python3 bench/make_passkey_corpus.py --out data/passkey_only_src --docs 30000 --plain_fraction 0 --seed 11
  "$NATS" prepare --input data/passkey_only_src/train.jsonl --tokenizer byte --out data/passkey_only --val_fraction 0.02
fi
if [ ! -d data/passkey_heldout/train ]; then
  # The last 10% of every book, never trained on: the held-out perplexity text and the passkey filler.
  "$NATS" prepare --input data/passkey_src/heldout.txt --format text --tokenizer byte --out data/passkey_heldout \
    --val_fraction 0
fi

stamp() { date +%s; }
t0=$(stamp)
# Phase 1: book passages mixed with passkey samples; phase 2: passkey samples only (the retrieval signal is a few
# answer bytes per window, so it gets the whole batch).
"$NATS" train --config configs/posttrain/base_byte_passkey.textproto --set train.run_dir="$OUT/base" --resume \
  2>&1 | tee -a "$OUT/base.log" | grep -E "^(eval|summary)" || true
"$NATS" train --config configs/posttrain/base_byte_passkey.textproto --set train.run_dir="$OUT/base" --resume \
  --set train.steps=520 --set data.train_path=data/passkey_only/train --allow_config_change \
  2>&1 | tee -a "$OUT/base.log" | grep -E "^(eval|summary)" || true
t_base=$(( $(stamp) - t0 ))

# Through Hugging Face layout and back, as a user's own dense model would come in.
"$NATS" export --checkpoint "$OUT/base/ckpt" --to "$OUT/hf_base" --overwrite
"$NATS" import --from "$OUT/hf_base" --out "$OUT/imported" --overwrite

declare -A POST_SECONDS
for kv in 25 10; do
  t0=$(stamp)
  "$NATS" train --config configs/posttrain/distill_kv$kv.textproto --set train.run_dir="$OUT/kv$kv" \
    --set train.init_from="$OUT/imported" --resume 2>&1 | tee -a "$OUT/kv$kv.log" | grep -E "^(eval|summary)" || true
  POST_SECONDS[$kv]=$(( $(stamp) - t0 ))
done

for kv in 25 10; do
  ckpt="$OUT/kv$kv/ckpt"
  "$NATS" eval --checkpoint "$ckpt" --data data/passkey_heldout/train --windows "$WINDOWS" --mode decode \
    --policy all --budget match --json "$OUT/ppl_kv$kv.jsonl" 2>/dev/null | tee "$OUT/ppl_kv$kv.md"
  "$NATS" eval --checkpoint "$ckpt" --task passkey --filler data/passkey_src/heldout.txt --lengths "$LENGTHS" \
    --depths "$DEPTHS" --samples "$SAMPLES" --policy all --budget match --json "$OUT/passkey_kv$kv.jsonl" \
    2>/dev/null | tee "$OUT/passkey_kv$kv.md"
done

python3 - "$OUT" "$t_base" "${POST_SECONDS[25]}" "${POST_SECONDS[10]}" <<'PY' | tee "$OUT/results.md"
import json, sys
out, t_base, t25, t10 = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def lines(path):
    with open(path) as f:
        return [json.loads(l) for l in f if l.strip()]
def train_tokens(run):
    summary = json.load(open(f"{out}/{run}/summary.json"))
    return summary
all_lengths = sorted({r['length'] for r in lines(f'{out}/passkey_kv25.jsonl')})
print("| KV target | policy | budget (entries/head) | KV entries/head (of dense) | KV fraction (eval) | "
      "held-out ppl (decode) | vs dense | passkey (all) | " + " | ".join(f"passkey L{L}" for L in all_lengths) + " |")
print("|---|---|---|---|---|---|---|---|" + "---|" * len(all_lengths))
for kv, secs in (("25", t25), ("10", t10)):
    ppl = {r["policy"]: r for r in lines(f"{out}/ppl_kv{kv}.jsonl")}
    pk = lines(f"{out}/passkey_kv{kv}.jsonl")
    lengths = sorted({r["length"] for r in pk})
    dense = ppl["dense"]["ppl_decode"]
    for policy in ("dense", "nats", "streaming", "h2o"):
        r = ppl[policy]
        rows = [p for p in pk if p["policy"] == policy]
        overall = sum(p["correct"] for p in rows) / max(1, sum(p["samples"] for p in rows))
        per_len = []
        for L in lengths:
            sel = [p for p in rows if p["length"] == L]
            per_len.append(f"{sum(p['correct'] for p in sel) / max(1, sum(p['samples'] for p in sel)):.2f}")
        budget = r["budget"] if policy in ("streaming", "h2o") else "-"
        entries = f"{r['kv_entries']:.1f} ({r['kv_entries'] / ppl['dense']['kv_entries']:.3f})"
        print(f"| 0.{kv} | {policy} | {budget} | {entries} | {r['kv_fraction']:.3f} | {r['ppl_decode']:.3f} | "
              f"{100 * (r['ppl_decode'] / dense - 1):+.1f}% | {overall:.2f} | " + " | ".join(per_len) + " |")
print()
for kv, secs in (("25", t25), ("10", t10)):
    s = json.load(open(f"{out}/kv{kv}/summary.json"))
    print(f"post-training to KV 0.{kv}: {s.get('steps')} steps, {s.get('tokens_per_s', 0):.0f} tokens/s, "
          f"{secs / 60:.1f} min wall (this invocation)")
print(f"base model: {t_base / 60:.1f} min wall (this invocation)")
PY
