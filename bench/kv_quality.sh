#!/usr/bin/env bash
# Quality vs KV budget on the held-out books (issue 6): a trained NAtS model decoded with its exact cache vs the
# dense model of the same sweep decoded with StreamingLLM and H2O at the SAME cache size (entries per KV head at
# the end of the window = NAtS's retained count), dense attention as the ceiling. Token-by-token decoding from
# position 0 (prefill 1), WINDOWS windows of context_length + 1 tokens. Prints a markdown table.
# usage: bench/kv_quality.sh [BUILD_DIR] [SWEEP_DIR] [NATS_RUN] [WINDOWS]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${1:-build}; SWEEP=${2:-runs/sweep}; NATS_RUN=${3:-nats_1e-7}; WINDOWS=${4:-4}
nats="$BUILD_DIR/bin/nats"
out=$(mktemp -d); trap 'rm -rf "$out"' EXIT
"$nats" eval --checkpoint "$SWEEP/$NATS_RUN/ckpt" --policy nats --mode both --windows "$WINDOWS" > "$out/nats.txt"
ctx=$(grep -o '"tokens":[0-9]*' "$out/nats.txt" | head -1 | cut -d: -f2)
forward_kv=$("$nats" eval --checkpoint "$SWEEP/$NATS_RUN/ckpt" --policy nats --mode forward --windows "$WINDOWS" |
             grep '^{' | /usr/bin/python3 -c 'import json,sys; print(json.loads(sys.stdin.read())["kv_fraction"])')
T=$(( ctx / WINDOWS ))
budget=$(/usr/bin/python3 -c "print(max(8, round($forward_kv * $T)))")
for p in dense streaming h2o; do
  "$nats" eval --checkpoint "$SWEEP/dense/ckpt" --policy "$p" --budget "$budget" --mode decode --windows "$WINDOWS" \
    > "$out/$p.txt"
done
/usr/bin/python3 - "$out" "$NATS_RUN" "$budget" "$T" <<'PY'
import json, sys
out, run, budget, T = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
def rec(name): return [json.loads(l) for l in open(f"{out}/{name}.txt") if l.startswith("{")][-1]
rows = [("dense model, dense cache (ceiling)", rec("dense")), (f"NAtS model ({run}), NAtS cache", rec("nats")),
        (f"dense model, StreamingLLM (4 sink + recent, {budget} entries)", rec("streaming")),
        (f"dense model, H2O (heavy + recent, {budget} entries)", rec("h2o"))]
print("| model / cache | val ppl (decode) | bits per byte | mean KV fraction over positions | peak cache / dense |")
print("|---|---|---|---|---|")
import math
for name, r in rows:
    ratio = r["peak_cache_bytes"] / r["dense_cache_bytes"] if r["dense_cache_bytes"] else float("nan")
    print(f"| {name} | {r['ppl_decode']:.3f} | {r['loss_decode'] / math.log(2):.4f} | {r['kv_fraction']:.3f} | {ratio:.3f} |")
print(f"\nbudget = NAtS's retained entries per KV head at the end of a {T}-token window ({budget}); byte-level models,"
      f" so bits per byte = loss / ln 2")
PY
