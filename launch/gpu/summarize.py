#!/usr/bin/env python3
"""Writes device_check.sh's summary.json: every step's record (results.jsonl) plus the numbers its logs hold.

Numbers: gpt2_124m tokens/s and MFU of `nats train` (the mean over its logged steps after the first two),
the PyTorch peer's JSON line (eager and compiled), and the gpu_attention_bench lines.
usage: summarize.py RESULTS.jsonl SUMMARY.json [WORK LOGS]
"""
import json
import os
import sys


def json_lines(path, kind=None):
    out = []
    if not os.path.exists(path):
        return out
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if kind is None or rec.get("kind") == kind:
                out.append(rec)
    return out


def main():
    results, summary_path = sys.argv[1], sys.argv[2]
    work = sys.argv[3] if len(sys.argv) > 3 else None
    logs = sys.argv[4] if len(sys.argv) > 4 else None
    steps = json_lines(results)
    numbers = {}
    if work:
        train = json_lines(os.path.join(work, "run_gpt2", "metrics.jsonl"), "train")[2:]
        if train:
            tps = [r["tokens_per_s"] for r in train if r.get("tokens_per_s")]
            mfu = [r["mfu"] for r in train if r.get("mfu") is not None]
            numbers["gpt2_124m_ours"] = {"tokens_per_s": sum(tps) / len(tps) if tps else None,
                                         "mfu": sum(mfu) / len(mfu) if mfu else None,
                                         "logged_steps": len(train)}
    if logs:
        for name in ("gpt2_124m_torch_eager", "gpt2_124m_torch_compile"):
            recs = json_lines(os.path.join(logs, name + ".log"))
            if recs:
                numbers[name] = recs[-1]
        bench = json_lines(os.path.join(logs, "nats_vs_sdpa.log"), "gpu_attention")
        if bench:
            numbers["nats_vs_sdpa"] = bench
    counts = {}
    for s in steps:
        counts[s.get("status")] = counts.get(s.get("status"), 0) + 1
    summary = {"counts": counts, "steps": steps, "numbers": numbers}
    with open(summary_path, "w") as f:
        json.dump(summary, f, indent=1)
    print("steps:", ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    for k, v in numbers.items():
        print(k, json.dumps(v)[:300])


if __name__ == "__main__":
    main()
