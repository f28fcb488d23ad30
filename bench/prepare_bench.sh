#!/usr/bin/env bash
# `nats prepare --input` throughput and peak memory on a held-out-style corpus, against js-tiktoken (OpenAI's
# tiktoken ported to JavaScript, the reference JS GPT-2 encoder) on the same bytes in the same script.
#  - The corpus: the 13 demo books cut into paragraph documents, as JSON lines, repeated to --mb megabytes of
#    text (default 64), so documents look like a web corpus's (hundreds of bytes to a few KB).
#  - nats prepare with --threads 1 and 2 (GPT-2 tokenizer): wall time, MB/s of text, peak RSS (/usr/bin/time).
#  - js-tiktoken 1.x (npm, installed into the cache's npm prefix on first use): encodeOrdinary-equivalent
#    encode of every document, one thread (node), same documents; also checks its ids equal ours on the first
#    2000 documents.
# usage: bench/prepare_bench.sh [BUILD_DIR] [MB]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${1:-build}; MB=${2:-64}
nats="$BUILD_DIR/bin/nats"
cache=${NATS_CACHE:-data}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [ ! -d "$cache/npm/node_modules/js-tiktoken" ]; then
  npm install --silent --no-audit --no-fund --prefix "$cache/npm" js-tiktoken@1 >/dev/null
fi
/usr/bin/python3 - "$cache/books/raw" "$work/corpus.jsonl" "$MB" <<'PY'
import glob, json, sys
raw, out, mb = sys.argv[1], sys.argv[2], float(sys.argv[3])
paragraphs = []
for path in sorted(glob.glob(f"{raw}/*.txt")):
    text = open(path, encoding="utf-8", errors="replace").read().replace("\r\n", "\n")
    paragraphs += [p.strip() for p in text.split("\n\n") if len(p.strip()) > 40]
target, written, copy = mb * 1e6, 0, 0
with open(out, "w") as f:
    while written < target:
        for p in paragraphs:
            doc = p if copy == 0 else f"{p} ({copy})"   # repeated copies differ, as near-duplicates do
            f.write(json.dumps({"text": doc}, ensure_ascii=False) + "\n")
            written += len(doc.encode())
            if written >= target:
                break
        copy += 1
print(f"corpus: {written / 1e6:.1f} MB of text in {out}")
PY
# One warm-up read so both tools start from the page cache.
cat "$work/corpus.jsonl" > /dev/null
for threads in 1 2; do
  /usr/bin/time -f "%e %M" -o "$work/time$threads" "$nats" prepare --input "$work/corpus.jsonl" --out "$work/out$threads" \
    --threads "$threads" > "$work/summary$threads" 2>/dev/null
done
cmp -s "$work/out1/train/000000.tok" "$work/out2/train/000000.tok" || { echo "threads 1 and 2 differ"; exit 1; }
cat > "$work/js_bench.mjs" <<'JS'
import { readFileSync } from "fs";
import { createRequire } from "module";
const require = createRequire(process.argv[2] + "/");
const { getEncoding } = require("js-tiktoken");
const enc = getEncoding("gpt2");
const docs = readFileSync(process.argv[3], "utf8").split("\n").filter((l) => l).map((l) => JSON.parse(l).text);
let bytes = 0, tokens = 0;
const t0 = process.hrtime.bigint();
for (const d of docs) { tokens += enc.encode(d).length; bytes += Buffer.byteLength(d); }
const s = Number(process.hrtime.bigint() - t0) / 1e9;
const first = docs.slice(0, 2000).map((d) => enc.encode(d));
console.log(JSON.stringify({ bytes, tokens, seconds: s, first }));
JS
/usr/bin/time -f "%e %M" -o "$work/time_js" node "$work/js_bench.mjs" "$(cd "$cache/npm/node_modules" && pwd)" "$work/corpus.jsonl" \
  > "$work/js.json"
/usr/bin/python3 - "$work" <<'PY'
import json, re, struct, sys
w = sys.argv[1]
js = json.load(open(f"{w}/js.json"))
# Our ids of the first 2000 documents: the train/val shards hold them in order with eot (50256) before each; the
# split is by hash, so compare the documents that went to train, in order, against the JS ids of the same docs.
def shard_ids(path):
    data = open(path, "rb").read()
    n = struct.unpack_from("<Q", data, 24)[0]
    return list(struct.unpack_from(f"<{n}H", data, 128))
ids = shard_ids(f"{w}/out1/train/000000.tok")
docs, cur = [], None
for t in ids:
    if t == 50256:
        cur = []; docs.append(cur)
    else:
        cur.append(t)
js_docs = iter(js["first"])
matched = 0
for d in docs[:1500]:
    for j in js_docs:                     # skip the documents that went to validation
        if j == d:
            matched += 1; break
    else:
        break
print(f"js-tiktoken ids equal ours on {matched} of the first {min(1500, len(docs))} train documents")
assert matched == min(1500, len(docs)), "ids differ from js-tiktoken"
rows = []
for name, key in (("nats prepare, 1 thread", "1"), ("nats prepare, 2 threads", "2")):
    secs, rss = open(f"{w}/time{key}").read().split()
    summary = open(f"{w}/summary{key}").read()
    text_mb = float(re.search(r"MB on disk, ([\d.]+) MB of text", summary).group(1))
    rows.append((name, text_mb, float(secs), int(rss) / 1024))
secs, rss = open(f"{w}/time_js").read().split()
js_rate = js["bytes"] / 1e6 / js["seconds"]
print()
print("| tokenizer run | MB of text | wall s | MB/s | x js-tiktoken | peak RSS MB |")
print("|---|---:|---:|---:|---:|---:|")
for name, mb, s, r in rows:
    print(f"| {name} (read, parse JSON, tokenize, write shards) | {mb:.1f} | {s:.1f} | {mb / s:.1f} | {mb / s / js_rate:.2f} | {r:.0f} |")
print(f"| js-tiktoken 1.x, node, 1 thread (encode only, file in memory) | {js['bytes'] / 1e6:.1f} | {js['seconds']:.1f} | {js_rate:.1f} | 1.00 | {int(rss) / 1024:.0f} |")
PY
