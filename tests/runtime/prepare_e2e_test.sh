#!/usr/bin/env bash
# `nats prepare --input` end to end, as a user runs it:
#  1. a JSONL corpus (plain + gzip) and text files -> shards; the shards are byte-identical for 1 and 2 threads,
#     and both flag syntaxes (--flag value, --flag=value) work;
#  2. training on the sharded corpus (windows cross shard boundaries): 8 steps straight == 4 steps + resume + 4
#     (bit-identical losses), so the loader's cursor is exact across shards; a resume after the corpus changed
#     (a shard removed) is refused unless --allow_config_change;
#  3. a GPT-2-vocabulary model refuses the byte-tokenizer shards with a message naming the fix.
# usage: prepare_e2e_test.sh NATS_BINARY SOURCE_DIR DATA_DIR
set -euo pipefail
nats=$1 src=$2 data=$3
cache=${NATS_CACHE:-$src/.cache}  # downloads (data/cache_dir.h): the raw books
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# 1. A corpus from two real books: paragraphs of Moby Dick as JSON lines (half of them gzipped), Sherlock as text.
mkdir -p "$out/in/text"
python3 - "$cache/books/raw/mobydick.txt" "$out/in" <<'PY'
import gzip, json, sys
paragraphs = [p.strip() for p in open(sys.argv[1], encoding="utf-8", errors="replace").read().split("\n\n")]
paragraphs = [p for p in paragraphs if p][:3000]
half = len(paragraphs) // 2
with open(f"{sys.argv[2]}/part1.jsonl", "w") as f:
    for i, p in enumerate(paragraphs[:half]):
        f.write(json.dumps({"id": i, "meta": {"text": p}}) + "\n")
with gzip.open(f"{sys.argv[2]}/part2.jsonl.gz", "wt") as f:
    for i, p in enumerate(paragraphs[half:]):
        f.write(json.dumps({"id": half + i, "meta": {"text": p}}) + "\n")
PY
cp "$cache/books/raw/sherlock.txt" "$out/in/text/"
for threads in 1 2; do
  "$nats" prepare --input "$out/in/*.jsonl*" --input="$out/in/text" --text_field meta.text --tokenizer=byte \
    --shard_tokens 30000 --val_fraction=0.05 --threads "$threads" --out "$out/corpus$threads" > "$out/prepare$threads.log"
done
cat "$out/prepare1.log"
grep -q "train on it with: --set data.train_path=$out/corpus1/train" "$out/prepare1.log"
diff -r "$out/corpus1/train" "$out/corpus2/train"
diff -r "$out/corpus1/val" "$out/corpus2/val"
shards=$(ls "$out/corpus1/train" | wc -l)
[ "$shards" -ge 10 ] || { echo "expected >= 10 train shards, got $shards"; exit 1; }

# 2. Train a byte-level model on it; resume in the middle.
common=(--config "$src/configs/tiny.textproto" --set model.vocab_size=320 --set data.tokenizer=byte
        --set model.n_layer=1 --set model.d_model=64 --set model.context_length=64 --set train.batch_size=4
        --set train.log_interval=1 --set train.eval_interval=0 --set train.eval_windows=2 --set train.threads=1
        --set data.train_path="$out/corpus1/train" --set data.val_path="$out/corpus1/val")
"$nats" train "${common[@]}" --set train.steps=8 --set train.run_dir="$out/straight" > /dev/null
"$nats" train "${common[@]}" --set train.steps=4 --set train.run_dir="$out/split" > /dev/null
"$nats" train "${common[@]}" --set train.steps=8 --set train.run_dir="$out/split" --resume > /dev/null
python3 - "$out" <<'PY'
import json, sys
def losses(path):
    return {r["step"]: r["loss"] for r in map(json.loads, open(path)) if r["kind"] == "train"}
a, b = losses(f"{sys.argv[1]}/straight/metrics.jsonl"), losses(f"{sys.argv[1]}/split/metrics.jsonl")
assert sorted(a) == list(range(1, 9)) and sorted(b) == list(range(1, 9)), (a, b)
worst = max(abs(a[s] - b[s]) for s in a)
print(f"sharded corpus: 8 straight vs 4 + resume + 4: max |loss difference| = {worst:.1e}")
assert worst == 0.0, worst
PY

# 2b. The corpus changes under the run (its last train shard removed, same path): the resume is refused, naming
#     the corpus and the fix; with --allow_config_change it goes on and says so.
rm "$out/corpus1/train/$(ls "$out/corpus1/train" | tail -1)"
if "$nats" train "${common[@]}" --set train.steps=10 --set train.run_dir="$out/split" --resume > "$out/refused.log" 2>&1; then
  echo "a resume on a changed corpus was not refused"; exit 1
fi
grep -q "the training corpus differs from the one .* was trained on" "$out/refused.log" || { cat "$out/refused.log"; exit 1; }
grep -q "allow_config_change" "$out/refused.log"
"$nats" train "${common[@]}" --set train.steps=10 --set train.run_dir="$out/split" --resume --allow_config_change \
  > "$out/allowed.log" 2>&1 || { echo "resume with --allow_config_change failed"; cat "$out/allowed.log"; exit 1; }
grep -q "note: data.train_path = .*the training corpus differs" "$out/allowed.log"

# 3. The byte shards under a GPT-2 model (configs/tiny reads gpt2 ids): refused before any step, naming the fix.
if "$nats" train --config "$src/configs/tiny.textproto" --set data.train_path="$out/corpus1/train" \
    --set data.val_path="$out/corpus1/val" --set train.run_dir="$out/wrong" \
    > "$out/wrong.log" 2>&1; then
  echo "a gpt2 model trained on byte shards"; exit 1
fi
grep -q "these tokens come from byte" "$out/wrong.log" || { cat "$out/wrong.log"; exit 1; }
grep -q "nats prepare --tokenizer gpt2" "$out/wrong.log"
echo "prepare e2e: ok"
