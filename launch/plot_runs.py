#!/usr/bin/python3
"""`nats plot RUN_DIR... [--out DIR]`: PNG and SVG figures of training runs from their JSON-lines metrics.

Reads <run_dir>/metrics.jsonl (rank 0's log; runtime/metrics_log.h) of every run and writes to --out
(default: the first run's plots/ folder):
  loss.png / .svg         training loss and validation loss against step, one colour per run
  nats_<run>.png / .svg   for NAtS runs: per layer, the global / local / sliding fractions and the KV fraction
                          against step (the method's learning curve: the types settle, the cache shrinks)
Prints the paths it wrote. Exit status 2 on bad arguments, 1 when a run has no metrics.
Uses matplotlib from Debian (python3-matplotlib) with the non-interactive Agg backend.
"""
import argparse
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_metrics(run_dir):
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no metrics; is {run_dir} a train.run_dir of `nats train`?")
    train, evals = [], []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                # A run killed mid-write leaves at most one partial last line; skip it rather than fail.
                print(f"warning: {path}:{number}: not JSON, skipped", file=sys.stderr)
                continue
            if row.get("rank", 0) != 0:
                continue
            if row.get("kind") == "train":
                train.append(row)
            elif row.get("kind") == "eval":
                evals.append(row)
    # A resumed run appends; a step logged twice (after a rollback or a resume) keeps its newest value.
    dedup = lambda rows: sorted({r["step"]: r for r in rows}.values(), key=lambda r: r["step"])
    return dedup(train), dedup(evals)


def save(fig, out_dir, stem):
    paths = []
    for ext in ("png", "svg"):
        path = os.path.join(out_dir, f"{stem}.{ext}")
        fig.savefig(path, dpi=120 if ext == "png" else None, bbox_inches="tight")
        paths.append(path)
    plt.close(fig)
    return paths


def plot_losses(runs, out_dir):
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, (name, (train, evals)) in enumerate(runs.items()):
        colour = f"C{i % 10}"
        if train:
            ax.plot([r["step"] for r in train], [r["loss"] for r in train], color=colour, alpha=0.6, lw=1,
                    label=f"{name} train")
        if evals:
            ax.plot([r["step"] for r in evals], [r["val_loss"] for r in evals], "o-", color=colour, lw=2, ms=4,
                    label=f"{name} val")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats per token)")
    ax.set_title("training and validation loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save(fig, out_dir, "loss")


def plot_types(name, train, out_dir):
    rows = [r for r in train if "kv_fraction" in r]
    if not rows:
        return []
    layers = len(rows[0]["kv_fraction"])
    steps = [r["step"] for r in rows]
    fig, axes = plt.subplots(1, layers, figsize=(3.2 * layers + 1, 3.4), sharey=True, squeeze=False)
    for layer, ax in enumerate(axes[0]):
        for key, label, colour in (("frac_global", "global", "C3"), ("frac_local", "local", "C1"),
                                   ("frac_sliding", "sliding", "C2"), ("kv_fraction", "KV fraction", "k")):
            ax.plot(steps, [r[key][layer] for r in rows], label=label, color=colour,
                    lw=2 if key == "kv_fraction" else 1.2, ls="--" if key == "kv_fraction" else "-")
        ax.set_title(f"NAtS layer {layer}")
        ax.set_xlabel("step")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("fraction of tokens")
    axes[0][-1].legend(fontsize=8, loc="upper right")
    fig.suptitle(f"{name}: token types and KV fraction", y=1.03)
    return save(fig, out_dir, f"nats_{name}")


def main(argv):
    parser = argparse.ArgumentParser(prog="nats plot", description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="train.run_dir of one or more runs")
    parser.add_argument("--out", help="output folder (default: <first run>/plots)")
    args = parser.parse_args(argv)
    out_dir = args.out or os.path.join(args.runs[0], "plots")
    runs = {}
    for run_dir in args.runs:
        name = os.path.basename(os.path.normpath(run_dir))
        try:
            runs[name] = read_metrics(run_dir)
        except FileNotFoundError as e:
            print(f"nats plot: {e}", file=sys.stderr)
            return 1
        if not runs[name][0] and not runs[name][1]:
            print(f"nats plot: {run_dir}/metrics.jsonl has no training or evaluation lines yet", file=sys.stderr)
            return 1
    os.makedirs(out_dir, exist_ok=True)
    written = plot_losses(runs, out_dir)
    for name, (train, _) in runs.items():
        written += plot_types(name, train, out_dir)
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
