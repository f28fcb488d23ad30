#!/usr/bin/env bash
# `nats bench peak` (launch/bench_command.cpp): a short measurement writes a peak file that parses, with a
# positive GFLOP/s, the thread count asked for, this machine's CPU model and the LibTorch version; a training
# run then uses it for its MFU. Wrong use: exit 2 with one line.
# usage: bench_peak_test.sh NATS_BINARY SOURCE_DIR DATA_DIR
set -euo pipefail
nats=$1 src=$2 data=$3
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

"$nats" bench peak --out "$out/peak.json" --seconds 0.05 --sizes 64,128 --threads 1 >"$out/bench.log"
cat "$out/bench.log"
grep -q "GFLOP/s" "$out/bench.log"
/usr/bin/python3 - "$out/peak.json" <<'PY'
import json, sys
p = json.load(open(sys.argv[1]))
assert p["gflops"] > 0, p
assert p["threads"] == 1, p
assert p["cpu_model"], p
assert p["libtorch"], p
assert len(p["date"]) == 20 and p["date"].endswith("Z"), p
assert [t["size"] for t in p["timings"]] == [64, 128], p
assert p["gflops"] == max(t["gflops"] for t in p["timings"]), p
print(f"peak file ok: {p['gflops']:.1f} GFLOP/s on {p['threads']} thread(s), {p['cpu_model']}")
PY

# The default file is <NATS_CACHE>/peak.json, and `nats train` on the same threads reads it.
mkdir -p "$out/cache"
NATS_CACHE="$out/cache" "$nats" bench peak --seconds 0.05 --sizes 64 --threads 1 >/dev/null
test -s "$out/cache/peak.json"
NATS_CACHE="$out/cache" "$nats" train --config "$src/configs/tiny.textproto" --set model.n_layer=1 \
  --set model.d_model=32 --set model.n_head=2 --set model.context_length=32 --set train.steps=2 \
  --set train.eval_windows=1 --set train.threads=1 --set data.data_dir="${NATS_CACHE:-$src/.cache}" \
  --set data.train_path="$data/books/train.tok" --set data.val_path="$data/books/val.tok" \
  --set train.run_dir="$out/run" >"$out/train.log"
grep -q "^MFU peak: .* GFLOP/s per rank x 1 rank(s) = .* (${out}/cache/peak.json, \`nats bench peak\` of " \
  "$out/train.log" || { cat "$out/train.log"; exit 1; }
grep -q "| MFU " "$out/train.log"

for args in "" "peek" "peak --threads 0" "peak --seconds -1" "peak --sizes 0"; do
  # shellcheck disable=SC2086
  rc=0; "$nats" bench $args >/dev/null 2>"$out/err" || rc=$?
  [ "$rc" -eq 2 ] || { echo "FAIL: nats bench $args: exit $rc, want 2"; exit 1; }
  head -1 "$out/err" | grep -q "^nats bench: " || { echo "FAIL: nats bench $args: $(head -1 "$out/err")"; exit 1; }
done
echo "all passed"
