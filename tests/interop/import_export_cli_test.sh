#!/usr/bin/env bash
# `nats import` / `nats export` end to end on the Hugging Face fixtures (hf_reference.py): the imported GPT-2 and
# Llama checkpoints are normal checkpoints (`nats inspect` verifies them, `nats eval` runs on them), an export
# imports back, --shard_mb writes an index, an existing output is refused without --overwrite, and bad input
# exits 1 with one line on stderr naming the file; usage errors exit 2; --help exits 0.
# usage: import_export_cli_test.sh NATS_BINARY PYTHON_WITH_TORCH
set -uo pipefail
NATS=$(realpath "$1")
PY=${2:-/usr/bin/python3}
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d /tmp/nats_import_cli.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
failures=0
fail() {
  echo "FAIL $*"
  failures=$((failures + 1))
}
ok() { echo "ok   $*"; }

"$PY" "$HERE/hf_reference.py" "$WORK/hf" > /dev/null || { echo "FAIL fixture script"; exit 1; }

for family in gpt2 llama; do
  if "$NATS" import --from "$WORK/hf/$family" --out "$WORK/$family" > "$WORK/$family.out" 2>&1; then
    ok "import $family: $(head -1 "$WORK/$family.out")"
  else
    fail "import $family: $(cat "$WORK/$family.out")"
  fi
  "$NATS" inspect "$WORK/$family" --no_config > "$WORK/inspect.out" 2>&1 && ok "inspect $family" ||
    fail "inspect $family: $(tail -3 "$WORK/inspect.out")"
done
grep -q "imported GPT2LMHeadModel (gpt2 family): 2 layers, d 48, 4 heads (4 kv), vocab 97" "$WORK/gpt2.out" &&
  ok "gpt2 summary line" || fail "gpt2 summary line: $(cat "$WORK/gpt2.out")"
grep -q "note: no tokenizer" "$WORK/llama.out" && ok "llama import notes the missing tokenizer" ||
  fail "no tokenizer note: $(cat "$WORK/llama.out")"

# A model trained here survives export -> import: the imported checkpoint evaluates to the same perplexity.
"$PY" - "$WORK/text.txt" <<'PYEOF'
import random, sys
random.seed(1)
words = ["the", "pass", "key", "is", "remember", "it", "what", "of", "and", "a"]
open(sys.argv[1], "w").write(" ".join(random.choice(words) for _ in range(6000)))
PYEOF
"$NATS" prepare --input "$WORK/text.txt" --format text --tokenizer byte --out "$WORK/shards" --val_fraction 0 \
  > /dev/null 2>&1 || fail "prepare"
TINY=(--set model.vocab_size=320 --set model.n_layer=2 --set model.n_head=2 --set model.d_model=32
      --set model.context_length=32 --set model.norm=RMS_NORM --set model.mlp=SWIGLU --set model.n_kv_head=1
      --set data.tokenizer=byte --set data.train_path="$WORK/shards/train" --set data.val_path="$WORK/shards/train"
      --set train.steps=3 --set train.batch_size=2 --set train.micro_batch_size=2 --set train.eval_windows=2 --set train.run_dir="$WORK/trained")
"$NATS" train --config "$HERE/../../configs/small_byte.textproto" "${TINY[@]}" > "$WORK/train.out" 2>&1 ||
  fail "train: $(tail -3 "$WORK/train.out")"
"$NATS" export --checkpoint "$WORK/trained/ckpt" --to "$WORK/trained_hf" > /dev/null 2>&1 || fail "export trained"
"$NATS" import --from "$WORK/trained_hf" --out "$WORK/trained_imported" > /dev/null 2>&1 || fail "import trained"
for c in trained/ckpt trained_imported; do
  "$NATS" eval --checkpoint "$WORK/$c" --data "$WORK/shards/train" --windows 2 --mode both --policy dense \
    --threads 1 2>/dev/null | grep '^| dense' | cut -d'|' -f2-6 > "$WORK/eval_${c%%/*}.out" || fail "eval $c"
done
if [ -s "$WORK/eval_trained.out" ] && cmp -s "$WORK/eval_trained.out" "$WORK/eval_trained_imported.out"; then
  ok "eval of the imported export equals the original: $(cat "$WORK/eval_trained.out")"
else
  fail "eval differs: $(cat "$WORK/eval_trained.out") vs $(cat "$WORK/eval_trained_imported.out")"
fi

# Export, with shards; import back; the second import equals the first (inspect shows the same tensors).
"$NATS" export --checkpoint "$WORK/llama" --to "$WORK/out" --shard_mb 0.05 > "$WORK/export.out" 2>&1 &&
  ok "export: $(cat "$WORK/export.out")" || fail "export: $(cat "$WORK/export.out")"
[ -f "$WORK/out/model.safetensors.index.json" ] && ok "sharded export has an index" || fail "no index.json"
"$NATS" import --from "$WORK/out" --out "$WORK/again" > /dev/null 2>&1 && ok "export imports back" ||
  fail "re-import"
"$PY" - "$WORK/out/config.json" <<'PYEOF' && ok "config.json has the nats object" || fail "config.json nats object"
import json, sys
c = json.load(open(sys.argv[1]))
assert c["architectures"] == ["LlamaForCausalLM"], c["architectures"]
assert "nats" in c and "config" in c["nats"], c.keys()
PYEOF

expect_error() {  # expect_error WHAT CODE NEEDLE -- command...
  local what=$1 code=$2 needle=$3
  shift 4
  "$@" > "$WORK/err.out" 2> "$WORK/err.err"
  local rc=$?
  if [ "$rc" -ne "$code" ]; then
    fail "$what: exit $rc, want $code: $(cat "$WORK/err.err")"
  elif ! grep -q -- "$needle" "$WORK/err.err"; then
    fail "$what: stderr lacks '$needle': $(cat "$WORK/err.err")"
  elif [ "$code" -eq 1 ] && [ "$(wc -l < "$WORK/err.err")" -ne 1 ]; then
    fail "$what: want one line on stderr, got: $(cat "$WORK/err.err")"
  else
    ok "$what"
  fi
}
expect_error "import into an existing checkpoint" 1 "--overwrite" -- "$NATS" import --from "$WORK/hf/gpt2" --out "$WORK/gpt2"
"$NATS" import --from "$WORK/hf/gpt2" --out "$WORK/gpt2" --overwrite > /dev/null 2>&1 && ok "--overwrite replaces" ||
  fail "--overwrite"
expect_error "export over a model" 1 "--overwrite" -- "$NATS" export --checkpoint "$WORK/llama" --to "$WORK/out"
expect_error "missing folder" 1 "not a directory" -- "$NATS" import --from "$WORK/nope" --out "$WORK/x"
mkdir -p "$WORK/broken" && cp "$WORK/hf/gpt2/config.json" "$WORK/broken/" &&
  head -c 1000 "$WORK/hf/gpt2/model.safetensors" > "$WORK/broken/model.safetensors"
expect_error "truncated weights" 1 "model.safetensors" -- "$NATS" import --from "$WORK/broken" --out "$WORK/x"
echo '{"architectures": ["T5ForConditionalGeneration"]}' > "$WORK/broken/config.json"
expect_error "unsupported architecture" 1 "GPT2LMHeadModel" -- "$NATS" import --from "$WORK/broken" --out "$WORK/x"
expect_error "--set that changes a shape" 1 "model.n_layer 2 -> 3" -- "$NATS" import --from "$WORK/hf/gpt2" --out "$WORK/y" --set model.n_layer=3
expect_error "export of no checkpoint" 1 "$WORK/nothing" -- "$NATS" export --checkpoint "$WORK/nothing" --to "$WORK/z"
expect_error "import without --out" 2 "--out" -- "$NATS" import --from "$WORK/hf/gpt2"
expect_error "bad --shard_mb" 2 "--shard_mb" -- "$NATS" export --checkpoint "$WORK/llama" --to "$WORK/z" --shard_mb -1
"$NATS" import --help | grep -q -- "--from HF_DIR" && ok "import --help" || fail "import --help"
"$NATS" export -h | grep -q -- "--to HF_DIR" && ok "export -h" || fail "export -h"

echo "$failures failure(s)"
[ "$failures" -eq 0 ]
