#!/usr/bin/python3
"""launch/eval_table.py LABEL=EVAL.json ...: one comparison table from several `nats eval --json` files.

Each file holds one JSON object per cache policy (launch/eval_command.cpp). Every row of every file becomes a table
row, labelled "LABEL, policy" (the label names the model; `launch/demo.sh` passes "dense model" and "NAtS
model"). Columns: perplexity by token-by-token decode with that cache, the KV fraction (mean over decode steps of
the entries a next query sees / tokens so far), the mean entries per KV head, the peak cache bytes (all layers)
and their share of a dense cache's, and decode tokens per second. Standard library only (no jq, no numpy).
"""
import json
import sys

POLICY_NAMES = {"dense": "dense cache", "nats": "NAtS cache", "streaming": "StreamingLLM", "h2o": "H2O"}


def rows_of(label, path):
    with open(path) as f:
        for line in f:
            if line.strip():
                yield label, json.loads(line)


def main(argv):
    if not argv or any("=" not in a for a in argv):
        print(__doc__.split("\n")[0], file=sys.stderr)
        return 2
    rows = [row for arg in argv for row in rows_of(*arg.split("=", 1))]
    order = list(POLICY_NAMES)  # dense first, then NAtS, then the eviction baselines
    rows.sort(key=lambda row: order.index(row[1]["policy"]) if row[1]["policy"] in order else len(order))
    header = ["model, KV cache", "val ppl (decode)", "KV fraction", "KV entries / head", "peak cache",
              "of dense", "decode tok/s"]
    table = []
    for label, r in rows:
        policy = POLICY_NAMES.get(r["policy"], r["policy"])
        if r.get("budget"):
            policy += f" ({r['budget']} entries)"
        table.append([f"{label}, {policy}", f"{r['ppl_decode']:.2f}", f"{r['kv_fraction']:.3f}",
                      f"{r['kv_entries']:.1f}", f"{r['peak_cache_bytes'] / 1024:.1f} KiB",
                      f"{r['peak_cache_bytes'] / r['dense_cache_bytes']:.2f}", f"{r['decode_tokens_per_s']:.0f}"])
    widths = [max(len(x) for x in col) for col in zip(header, *table)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w)
                                           for i, (c, w) in enumerate(zip(cells, widths))) + " |"
    print(line(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for cells in table:
        print(line(cells))
    first = rows[0][1]
    print(f"{first['windows']} held-out windows of {first['tokens'] // first['windows'] + 1} tokens "
          f"({first['data']}), decoded token by token on {first.get('threads', '?')} thread(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
