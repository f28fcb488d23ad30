#!/usr/bin/env bash
# `nats eval --json FILE`: stdout holds only the human table (no JSON line), the file one JSON object per policy;
# `--policy all` runs StreamingLLM and H2O at the NAtS cache size (--budget match): the budget the nats row names,
# and on average the NAtS cache's entries per KV head. Also: `nats train` keeps the effective config off the
# terminal unless --print_config asks for it.
# usage: eval_json_test.sh NATS_BINARY SOURCE_DIR DATA_DIR
set -euo pipefail
nats=$1 src=$2 data=$3
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
common=(--set train.steps=4 --set train.eval_interval=0 --set train.eval_windows=2 --set model.d_model=64
        --set model.context_length=32 --set train.threads=1
        --set data.train_path="$data/books/train.tok" --set data.val_path="$data/books/val.tok")
"$nats" train --config "$src/configs/tiny_nats.textproto" "${common[@]}" --set train.run_dir="$out/nats" > "$out/train.log"
if grep -q "effective config" "$out/train.log"; then echo "nats train printed its config unasked"; exit 1; fi
grep -q "^config: $out/nats/config.textproto" "$out/train.log"
"$nats" train --config "$src/configs/tiny_nats.textproto" "${common[@]}" --set train.steps=1 \
  --set train.run_dir="$out/printed" --print_config > "$out/printed.log"
grep -q "effective config" "$out/printed.log"

"$nats" eval --checkpoint "$out/nats/ckpt" --windows 2 --threads 1 --policy all --json "$out/all.json" > "$out/all.txt"
"$nats" eval --checkpoint "$out/nats/ckpt" --windows 2 --threads 1 --policy dense,streaming --budget 7 --mode decode \
  --json "$out/given.json" > "$out/given.txt"
cat "$out/all.txt" "$out/given.txt"
/usr/bin/python3 - "$out" <<'PY'
import json, sys
d = sys.argv[1]
for stem, policies in (("all", ["nats", "dense", "streaming", "h2o"]), ("given", ["dense", "streaming"])):
    text = open(f"{d}/{stem}.txt").read().splitlines()
    assert not any(line.lstrip().startswith("{") for line in text), f"JSON on stdout: {text}"
    assert text[0].startswith("eval ") and text[1].startswith("| policy |") and text[2].startswith("|---"), text
    assert [line.split("|")[1].strip() for line in text[3:3 + len(policies)]] == policies, text
    assert all(not line.startswith("|") for line in text[3 + len(policies):]), text  # notes after the table
    lines = [line for line in open(f"{d}/{stem}.json").read().splitlines()]
    rows = [json.loads(line) for line in lines]  # each line one whole object
    assert [r["policy"] for r in rows] == policies, rows
    for r in rows:
        assert r["kind"] == "eval" and r["windows"] == 2 and r["tokens"] == 64, r
        for key in ("ppl_decode", "kv_fraction", "kv_entries", "peak_cache_bytes", "decode_tokens_per_s"):
            assert r[key] is not None and r[key] > 0, (key, r)
by = {r["policy"]: r for r in map(json.loads, open(f"{d}/all.json"))}
nats = by["nats"]
assert abs(nats["ppl_forward"] - nats["ppl_decode"]) < 1e-3 * nats["ppl_forward"], nats  # the exact cache
for name in ("streaming", "h2o"):
    r = by[name]
    assert r["budget_rule"] == "match" and r["budget"] == nats["matching_budget"], (r, nats["matching_budget"])
    assert abs(r["kv_entries"] - nats["kv_entries"]) <= 1.0, (name, r["kv_entries"], nats["kv_entries"])
assert by["dense"]["budget"] == 0 and by["dense"]["kv_fraction"] == 1.0
assert f"{nats['matching_budget']} (match)" in open(f"{d}/all.txt").read()
given = {r["policy"]: r for r in map(json.loads, open(f"{d}/given.json"))}
assert given["streaming"]["budget"] == 7 and given["streaming"]["budget_rule"] == "given", given
assert "ppl_forward" not in given["streaming"], "--mode decode has no forward perplexity"
print("eval JSON: one object per policy; stdout: the table only; budget match =", nats["matching_budget"])
PY
