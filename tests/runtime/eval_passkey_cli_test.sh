#!/usr/bin/env bash
# `nats eval --task passkey` end to end on two tiny byte-level models trained for a few steps (a dense one and a
# NAtS one): the table on stdout (one row per policy x length, a column per depth), the --json file (one object
# per (policy, length, depth), every field with its type), --budget match (streaming / h2o at the NAtS cache's
# mean entries per KV head after the prefill, per length), --filler FILE, and the user errors (exit 2 for flags,
# 1 for files, each naming the flag or file). The models are untrained, so accuracy is ~0: mechanics only.
# Lengths are 128 and 192: byte tokens, and the key sentence and question alone take 97 of them.
# usage: eval_passkey_cli_test.sh NATS_BINARY SOURCE_DIR DATA_DIR
set -euo pipefail
nats=$1 src=$2 data=$3
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
common=(--set train.steps=3 --set train.eval_interval=0 --set train.eval_windows=2 --set model.d_model=32
        --set model.context_length=128 --set model.vocab_size=320 --set train.threads=1 --set data.tokenizer=byte
        --set data.train_path="$data/books_byte/train.tok" --set data.val_path="$data/books_byte/val.tok")
"$nats" train --config "$src/configs/tiny_nats.textproto" "${common[@]}" --set train.run_dir="$out/nats" > "$out/train.log"
"$nats" train --config "$src/configs/tiny.textproto" "${common[@]}" --set train.run_dir="$out/dense" >> "$out/train.log"

# Held-out book text when prepared (bench/make_passkey_corpus.py), else generated words: --filler FILE either way.
filler="$data/passkey_src/heldout.txt"
if [ ! -f "$filler" ]; then
  filler="$out/heldout.txt"
  /usr/bin/python3 -c "print(' '.join('w%d' % (i * 7919 % 1000) for i in range(20000)))" > "$filler"
fi
run=(--task passkey --policy all --lengths 128,192 --depths 0,0.5,1 --samples 2 --threads 1)
"$nats" eval --checkpoint "$out/nats/ckpt" "${run[@]}" --json "$out/nats.json" > "$out/nats.txt" 2> "$out/nats.err"
"$nats" eval --checkpoint "$out/dense/ckpt" "${run[@]}" --json "$out/dense.json" \
  --filler "$filler" > "$out/dense.txt" 2> "$out/dense.err"
"$nats" eval --checkpoint "$out/nats/ckpt" --task passkey --policy streaming --budget 9 --lengths 128 --depths 0.5 \
  --samples 1 --threads 1 --json "$out/given.json" > "$out/given.txt" 2> /dev/null
cat "$out/nats.txt" "$out/dense.txt"
grep -q "passes model.context_length 128" "$out/nats.err"  # 192 + the answer: RoPE extrapolation, said once
grep -q "^passkey: h2o, length 192: " "$out/nats.err"       # progress on stderr

/usr/bin/python3 - "$out" <<'PY'
import json, math, sys
d = sys.argv[1]
policies, lengths, depths = ["nats", "dense", "streaming", "h2o"], [128, 192], [0.0, 0.5, 1.0]
fields = {"kind": str, "checkpoint": str, "step": int, "filler": str, "policy": str, "length": int, "depth": float,
          "samples": int, "correct": int, "accuracy": float, "kv_fraction": float, "kv_entries": float,
          "budget": int, "budget_rule": str, "prompt_tokens": float, "max_new_tokens": int, "seed": int,
          "seconds": float, "threads": int}
for stem in ("nats", "dense"):
    text = open(f"{d}/{stem}.txt").read().splitlines()
    assert not any(line.lstrip().startswith("{") for line in text), f"JSON on stdout: {text}"
    assert text[0].startswith("passkey eval ") and "2 samples" in text[0], text[0]
    assert text[1] == ("| policy | length | budget | depth 0 | depth 0.5 | depth 1 | overall | KV entries / head "
                       "| KV fraction |"), text[1]
    table = [line.split("|")[1:-1] for line in text[3:3 + 8]]
    assert [(c[0].strip(), int(c[1])) for c in table] == [(p, n) for p in policies for n in lengths], table
    assert all(not line.startswith("|") for line in text[3 + 8:]), text  # notes after the table
    rows = [json.loads(line) for line in open(f"{d}/{stem}.json").read().splitlines()]
    assert [(r["policy"], r["length"], r["depth"]) for r in rows] == \
        [(p, n, x) for p in policies for n in lengths for x in depths], rows
    for r in rows:
        assert set(r) == set(fields), sorted(set(r) ^ set(fields))
        for key, kind in fields.items():
            assert isinstance(r[key], kind) or (kind is float and isinstance(r[key], int)), (key, r)
        assert r["kind"] == "passkey" and r["samples"] == 2 and 0 <= r["correct"] <= 2, r
        assert r["accuracy"] == r["correct"] / 2 and r["prompt_tokens"] == r["length"], r  # byte tokens: exact
        assert 0 < r["kv_fraction"] <= 1 and 0 < r["kv_entries"] <= r["length"] and r["seconds"] > 0, r
    for n in lengths:
        by = {r["policy"]: r for r in rows if r["length"] == n and r["depth"] == 0.5}
        nats = [r for r in rows if r["policy"] == "nats" and r["length"] == n]
        mean = sum(r["kv_entries"] for r in nats) / len(nats)
        assert by["dense"]["kv_fraction"] == 1.0 and by["dense"]["kv_entries"] == n and by["dense"]["budget"] == 0
        for name, floor in (("streaming", 5), ("h2o", 2)):
            r = by[name]
            assert r["budget_rule"] == "match" and r["budget"] == max(floor, math.floor(mean + 0.5)), (r, mean)
            assert r["kv_entries"] == min(r["budget"], n), r  # an evicting cache holds its budget after the prefill
        line = [l for l in text if l.startswith(f"budget (match), length {n}:")]
        assert line and f"keep {max(1, math.floor(mean + 0.5))} entries" in line[0], (line, mean)
        if stem == "dense":
            assert mean == n, "a dense model's NAtS policy keeps everything"
    if stem == "nats":
        assert any(r["kv_fraction"] < 1 for r in rows if r["policy"] == "nats"), "NAtS kept everything"
        assert all(r["filler"].startswith("data.val_path ") for r in rows), rows[0]["filler"]
    else:
        assert all(r["filler"].endswith("heldout.txt") for r in rows), rows[0]["filler"]
given = [json.loads(line) for line in open(f"{d}/given.json")]
assert len(given) == 1 and given[0]["budget"] == 9 and given[0]["budget_rule"] == "given", given
assert given[0]["kv_entries"] == 9, given
print("passkey eval: table and JSON schema ok; budget match per length")
PY

# User errors: one line naming the flag or file; 2 for flags, 1 for files.
ck=(--checkpoint "$out/nats/ckpt" --threads 1)
expect() {
  local want_rc=$1 want=$2
  shift 2
  set +e
  "$nats" eval "$@" > /dev/null 2> "$out/err"
  local rc=$?
  set -e
  if [ "$rc" -ne "$want_rc" ] || ! grep -q -F -- "$want" "$out/err" || grep -q "terminate called" "$out/err"; then
    echo "FAIL: nats eval $*: exit $rc (want $want_rc), stderr:"
    cat "$out/err"
    exit 1
  fi
}
printf 'far too short filler\n' > "$out/short.txt"
expect 2 "--task=bogus" "${ck[@]}" --task bogus
expect 2 "--lengths=128,abc" "${ck[@]}" --task passkey --lengths 128,abc
expect 2 "--lengths 20: the key sentence and the question alone take" "${ck[@]}" --task passkey --lengths 20
expect 2 "--depths=0,1.5" "${ck[@]}" --task passkey --depths 0,1.5
expect 2 "--samples must be at least 1" "${ck[@]}" --task passkey --samples 0
expect 2 "--max_new_tokens must be at least 1" "${ck[@]}" --task passkey --max_new_tokens 0
expect 2 "--policy" "${ck[@]}" --task passkey --policy nats,bogus
expect 2 "--budget" "${ck[@]}" --task passkey --policy streaming --budget 3 --lengths 128 --samples 1
expect 2 "--windows" "${ck[@]}" --task passkey --windows 2  # a perplexity flag: unknown to the passkey task
expect 1 "$out/short.txt: 20 bytes" "${ck[@]}" --task passkey --lengths 128 --filler "$out/short.txt"
expect 1 "--filler $out/missing.txt: cannot open" "${ck[@]}" --task passkey --filler "$out/missing.txt"
# The perplexity task is unchanged and still the default.
"$nats" eval "${ck[@]}" --windows 1 --mode forward | head -1 | grep -q "^eval "
"$nats" eval "${ck[@]}" --task perplexity --windows 1 --mode forward | head -1 | grep -q "^eval "
echo "passkey eval: error cases ok"
