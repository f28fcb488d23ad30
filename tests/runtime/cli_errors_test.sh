#!/usr/bin/env bash
# Bad input to the `nats` subcommands never crashes: out-of-range flags, a shard of another vocabulary or a
# damaged one, a damaged checkpoint, invalid config values. Each case must exit 1 or 2 (never 134 = abort or
# 139 = segfault), print no "terminate called" / backtrace, and name the flag, field or file at fault.
# usage: cli_errors_test.sh NATS_BINARY SOURCE_DIR DATA_DIR
set -uo pipefail
NATS=$(realpath "$1")
SRC=$2
DATA=$3
WORK=$(mktemp -d /tmp/nats_cli_errors.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
failures=0
cases=0

# expect NAME WANT_SUBSTRING CMD...: runs CMD, checks exit code in {1, 2} and that stderr names WANT_SUBSTRING.
expect() {
  local name=$1 want=$2
  shift 2
  cases=$((cases + 1))
  "$@" >"$WORK/out" 2>"$WORK/err"
  local rc=$?
  local why=""
  if [ "$rc" -ne 1 ] && [ "$rc" -ne 2 ]; then why="exit code $rc (want 1 or 2)"; fi
  if grep -q -E "terminate called|frame #[0-9]|Exception raised from" "$WORK/err"; then why="$why; a crash report on stderr"; fi
  if ! grep -q -F -- "$want" "$WORK/err"; then why="$why; stderr does not name '$want'"; fi
  if [ -n "$why" ]; then
    echo "FAIL $name: ${why#; }"
    sed 's/^/    /' "$WORK/err" | head -5
    failures=$((failures + 1))
  else
    echo "ok   $name (exit $rc): $(head -c 160 "$WORK/err" | head -1)"
  fi
}

# A small checkpoint with T = 128 (GPT-2 vocabulary), trained for 2 steps.
"$NATS" train --config "$SRC/configs/tiny.textproto" --set model.n_layer=1 --set model.d_model=32 \
  --set model.n_head=2 --set train.steps=2 --set train.eval_windows=1 --set train.threads=1 \
  --set data.train_path="$DATA/books/train.tok" --set data.val_path="$DATA/books/val.tok" \
  --set train.run_dir="$WORK/run" >"$WORK/train.log" 2>&1 ||
  { echo "FAIL: could not train the test checkpoint"; tail -5 "$WORK/train.log"; exit 1; }
CKPT=$WORK/run/ckpt
STEP=$(ls -d "$CKPT"/step_* | head -1)

# Shards written by hand (token_shard.h layout): one whose header has a larger vocabulary than the model, one
# whose header is fine but whose tokens are not (a damaged or hostile file with valid checksums).
python3 - "$WORK" <<'EOF'
import struct, sys, zlib
def shard(path, vocab, tokens):
    width = 2 if vocab <= 65536 else 4
    body = b"".join(struct.pack("<H" if width == 2 else "<I", t) for t in tokens)
    pad = b"\0" * ((-(64 + len(body))) % 8)
    offsets = struct.pack("<Q", 0)
    payload_crc = zlib.crc32(offsets, zlib.crc32(body))
    head = b"NATSTOK\0" + struct.pack("<IIIIQQI", 1, 64, vocab, width, len(tokens), 1, payload_crc)
    head += b"\0" * (60 - len(head))
    head += struct.pack("<I", zlib.crc32(head))
    open(path, "wb").write(head + body + pad + offsets)
shard(sys.argv[1] + "/big_vocab.tok", 70000, [69999 - i for i in range(400)])
shard(sys.argv[1] + "/bad_ids.tok", 50304, [60000] * 400)
EOF
cp "$DATA/books/val.tok" "$WORK/flipped.tok"
printf '\xff\xff\xff\xff' | dd of="$WORK/flipped.tok" bs=1 seek=1000 conv=notrunc status=none

# Damaged checkpoints: a truncated blob, a manifest with flipped bytes, a step without manifest.
cp -r "$STEP" "$WORK/truncated" && truncate -s 1000 "$WORK/truncated/rank_0.bin"
cp -r "$STEP" "$WORK/bad_manifest" && printf 'garbage!' | dd of="$WORK/bad_manifest/manifest.pb" bs=1 seek=30 conv=notrunc status=none
cp -r "$STEP" "$WORK/no_manifest" && rm "$WORK/no_manifest/manifest.pb"

E=("$NATS" eval --checkpoint "$CKPT" --windows 1)
expect eval_prefill_past_window "--prefill" "${E[@]}" --mode decode --prefill 500
expect eval_prefill_limit "[1, 128]" "${E[@]}" --mode decode --prefill 129
expect eval_prefill_zero "--prefill" "${E[@]}" --mode both --prefill 0
expect eval_windows_zero "--windows" "${E[@]}" --windows 0
expect eval_windows_text "--windows" "${E[@]}" --windows many
expect eval_bad_mode "--mode" "${E[@]}" --mode sideways
expect eval_bad_policy "--policy" "${E[@]}" --policy lru
expect eval_bad_policy_in_list "--policy" "${E[@]}" --policy nats,lru
expect eval_budget_text "--budget" "${E[@]}" --budget some
expect eval_json_unwritable "--json" "${E[@]}" --mode forward --json "$WORK/no_such_dir/eval.json"
expect eval_shard_other_vocab "model.vocab_size" "${E[@]}" --data "$WORK/big_vocab.tok"
expect eval_shard_bad_ids "outside the model's vocabulary" "${E[@]}" --data "$WORK/bad_ids.tok"
expect eval_shard_damaged "flipped.tok" "${E[@]}" --data "$WORK/flipped.tok"
expect eval_shard_missing "nope.tok" "${E[@]}" --data "$WORK/nope.tok"
expect eval_ckpt_truncated "rank_0.bin" "$NATS" eval --checkpoint "$WORK/truncated" --windows 1
expect eval_ckpt_bad_manifest "manifest.pb" "$NATS" eval --checkpoint "$WORK/bad_manifest" --windows 1
expect eval_ckpt_no_manifest "no_manifest" "$NATS" eval --checkpoint "$WORK/no_manifest" --windows 1
expect eval_ckpt_missing "does_not_exist" "$NATS" eval --checkpoint "$WORK/does_not_exist"
expect eval_set_changes_shape "model" "${E[@]}" --set model.d_model=64

G=("$NATS" generate --checkpoint "$CKPT" --prompt "Call me Ishmael." --max_tokens 4 --threads 1)
expect generate_top_p "--top_p" "${G[@]}" --top_p 2
expect generate_temperature "--temperature" "${G[@]}" --temperature -1
expect generate_max_tokens "--max_tokens" "${G[@]}" --max_tokens -3
expect generate_context "--max_context" "${G[@]}" --max_context 0
expect generate_prompt_too_long "--max_context" "${G[@]}" --max_context 3
expect generate_empty_prompt "--prompt" "$NATS" generate --checkpoint "$CKPT" --prompt ""
expect generate_bad_number "--top_k" "${G[@]}" --top_k lots
expect generate_bad_policy "policy" "${G[@]}" --policy lru
expect generate_ckpt_truncated "rank_0.bin" "$NATS" generate --checkpoint "$WORK/truncated" --prompt x
expect generate_ckpt_bad_manifest "manifest.pb" "$NATS" generate --checkpoint "$WORK/bad_manifest" --prompt x
expect generate_weights_removed "use --checkpoint" "$NATS" generate --config "$SRC/configs/tiny.textproto" --weights x.pt --prompt x
expect generate_weights_removed_eq "--weights was removed" "${G[@]}" --weights=x.pt

expect inspect_truncated "rank_0.bin" "$NATS" inspect "$WORK/truncated"
expect inspect_bad_manifest "manifest.pb" "$NATS" inspect "$WORK/bad_manifest"
expect inspect_missing "does_not_exist" "$NATS" inspect "$WORK/does_not_exist"
expect inspect_usage "usage" "$NATS" inspect

T=("$NATS" train --config "$SRC/configs/tiny.textproto" --set train.run_dir="$WORK/bad_train"
   --set data.train_path="$DATA/books/train.tok" --set data.val_path="$DATA/books/val.tok")
expect train_eval_windows_zero "train.eval_windows" "${T[@]}" --set train.eval_windows=0
expect train_context_huge "model.context_length" "${T[@]}" --set model.context_length=100000
expect train_vocab_huge "model.vocab_size" "${T[@]}" --set model.vocab_size=2000000000
expect train_unknown_field "model.colour" "${T[@]}" --set model.colour=blue
expect train_bad_enum "model.norm" "${T[@]}" --set model.norm=SOFT
# This machine's LibTorch sees no GPU (a CPU build, or none present); the GPU machine skips these two.
if ! nvidia-smi -L >/dev/null 2>&1; then
  expect train_cuda_without_gpu "train.device = CPU or AUTO" "${T[@]}" --set train.device=CUDA
  expect train_bf16_on_cpu "train.precision = FP32" "${T[@]}" --set train.precision=BF16
fi
expect train_shard_other_vocab "model.vocab_size" "${T[@]}" --set data.train_path="$WORK/big_vocab.tok"
expect train_missing_config "nope.textproto" "$NATS" train --config "$WORK/nope.textproto"
expect tokenize_bad_tokenizer "tokenizer" "$NATS" tokenize --tokenizer=sentencepiece
expect unknown_command "frobnicate" "$NATS" frobnicate

echo "$((cases - failures)) of $cases cases passed"
[ "$failures" -eq 0 ]
