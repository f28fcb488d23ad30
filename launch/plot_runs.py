#!/usr/bin/python3
"""`nats plot RUN_DIR... [--out DIR]`: PNG and SVG figures of training runs from their JSON-lines metrics.

Reads <run_dir>/metrics.jsonl (rank 0's log; runtime/metrics_log.h) of every run and writes to --out
(default: the first run's plots/ folder):
  loss.png / .svg         training loss and validation loss against step, one colour per run
  nats_<run>.png / .svg   for NAtS runs: per layer, the global / local / sliding fractions and the KV fraction
                          against step (the method's learning curve: the types settle, the cache shrinks)
  mask_<run>.png / .svg   for NAtS runs, from <run_dir>/mask_window.json (written by `nats train` at the end,
                          runtime/mask_window.h): per NAtS layer, KV head 0, the first (up to 256) tokens of the
                          first validation window: a strip with each token's learned type, and the attention mask
                          (docs/method.md 3; query rows x key columns), a visible entry coloured by its key's type
  index.md                what was drawn for each run, and why a run has no type figures (dense attention)
Prints the paths it wrote and one line per run without type figures. Exit status 2 on bad arguments, 1 when a run
has no metrics.
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


# Token-type colours, as in the type curves: global red, local orange, sliding green (matplotlib C3, C1, C2).
TYPE_COLOURS = {"G": (0xD6, 0x27, 0x28), "L": (0xFF, 0x7F, 0x0E), "S": (0x2C, 0xA0, 0x2C)}
HIDDEN_COLOUR = (0xE4, 0xE4, 0xE4)  # a causal pair the mask hides
FUTURE_COLOUR = (0xFF, 0xFF, 0xFF)  # above the diagonal
# Fixed pixel geometry (PNG at MASK_DPI, no tight bounding box), so that tests can find a cell: each NAtS layer is
# a panel MASK_PANEL_PX wide; its mask is a MASK_SIDE_PX square whose top-left corner is at (panel left +
# MASK_LEFT_PX, MASK_TOP_PX) from the figure's top-left; the type strip lies MASK_STRIP_PX high above it.
MASK_DPI = 100
MASK_PANEL_PX, MASK_FIGURE_HEIGHT_PX = 900, 1000
MASK_LEFT_PX, MASK_TOP_PX, MASK_SIDE_PX, MASK_STRIP_PX, MASK_STRIP_GAP_PX = 90, 110, 768, 20, 6


def visible_mask(types, window):
    """Rows = queries i, columns = keys j: the rule of docs/method.md 3 for a string of G / L / S."""
    n = len(types)
    next_global = [n - 1] * n  # e_j: first global position >= j (n - 1 when there is none)
    following = n - 1
    for j in range(n - 1, -1, -1):
        if types[j] == "G":
            following = j
        next_global[j] = following
    mask = [[False] * n for _ in range(n)]
    for i in range(n):
        for j in range(i + 1):
            t = types[j]
            mask[i][j] = (i == j or t == "G" or (t == "L" and i <= next_global[j]) or
                          (t == "S" and i - j <= window))
    return mask


def mask_image(types, window):
    import numpy as np

    n = len(types)
    mask = visible_mask(types, window)
    img = np.empty((n, n, 3), dtype=np.uint8)
    for i in range(n):
        for j in range(n):
            img[i, j] = FUTURE_COLOUR if j > i else TYPE_COLOURS[types[j]] if mask[i][j] else HIDDEN_COLOUR
    visible = sum(sum(row) for row in mask) / (n * (n + 1) / 2)
    return img, visible


def piece_label(piece):
    """A tick label for one token's text: escaped whitespace, at most 8 characters, no mathtext ($)."""
    text = piece.replace("\n", "\\n").replace("\t", "\\t")[:8]
    text = text if text.strip() else repr(text)
    return text.replace("$", r"\$")


def plot_mask(name, window_json, out_dir):
    import numpy as np
    from matplotlib.patches import Patch

    layers = [layer for layer in window_json["layers"] if layer.get("nats")]
    if not layers:
        return []
    n = len(window_json["tokens"])
    pieces = window_json.get("pieces") or [""] * n
    width = MASK_PANEL_PX * len(layers)
    fig = plt.figure(figsize=(width / MASK_DPI, MASK_FIGURE_HEIGHT_PX / MASK_DPI), dpi=MASK_DPI)
    # Figure fractions of a pixel box given from the top-left corner.
    box = lambda left, top, w, h: [left / width, 1 - (top + h) / MASK_FIGURE_HEIGHT_PX, w / width,
                                   h / MASK_FIGURE_HEIGHT_PX]
    ticks = list(range(0, n, max(1, n // 8)))
    for p, layer in enumerate(layers):
        types = layer["types"][0]
        left = p * MASK_PANEL_PX + MASK_LEFT_PX
        strip = fig.add_axes(box(left, MASK_TOP_PX - MASK_STRIP_GAP_PX - MASK_STRIP_PX, MASK_SIDE_PX,
                                 MASK_STRIP_PX))
        strip.imshow(np.array([[TYPE_COLOURS[t] for t in types]], dtype=np.uint8), aspect="auto",
                     interpolation="nearest", extent=(0, n, 1, 0))
        strip.set_xticks([])
        strip.set_yticks([])
        counts = {t: types.count(t) / n for t in "GLS"}
        img, visible = mask_image(types, window_json["window"])
        strip.set_title(f"layer {layer['layer']}, KV head 0: global {100 * counts['G']:.0f}%, local "
                        f"{100 * counts['L']:.0f}%, sliding {100 * counts['S']:.0f}%; mask keeps "
                        f"{100 * visible:.0f}% of causal pairs", fontsize=10, pad=8)
        ax = fig.add_axes(box(left, MASK_TOP_PX, MASK_SIDE_PX, MASK_SIDE_PX))
        ax.imshow(img, aspect="auto", interpolation="nearest", extent=(0, n, n, 0))
        ax.set_xticks([t + 0.5 for t in ticks])
        ax.set_xticklabels([f"{t}\n{piece_label(pieces[t])}" for t in ticks], fontsize=7)
        ax.set_yticks([t + 0.5 for t in ticks])
        ax.set_yticklabels([str(t) for t in ticks], fontsize=7)
        ax.set_xlabel("key position (token)", fontsize=9)
        if p == 0:
            ax.set_ylabel("query position", fontsize=9)
    legend = [Patch(color=[c / 255 for c in TYPE_COLOURS[t]], label=label)
              for t, label in (("G", "global key"), ("L", "local key"), ("S", "sliding key"))]
    legend += [Patch(facecolor=[c / 255 for c in HIDDEN_COLOUR], edgecolor="0.6", label="hidden (causal)"),
               Patch(facecolor="white", edgecolor="0.6", label="future")]
    fig.legend(handles=legend, loc="lower center", ncol=5, fontsize=9, frameon=False)
    fig.suptitle(f"{name}: learned attention mask of the first validation window (step {window_json['step']}, "
                 f"W = {window_json['window']}, first {n} tokens)", y=0.985, fontsize=11)
    paths = []
    for ext in ("png", "svg"):
        path = os.path.join(out_dir, f"mask_{name}.{ext}")
        fig.savefig(path, dpi=MASK_DPI)  # no tight bounding box: the geometry above is what tests read
        paths.append(path)
    plt.close(fig)
    return paths


def read_mask_window(run_dir):
    path = os.path.join(run_dir, "mask_window.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


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
    index = ["# nats plot", "", f"- `{os.path.basename(written[0])}`: training and validation loss of "
             + ", ".join(runs)]
    notes = []
    for run_dir, (name, (train, _)) in zip(args.runs, runs.items()):
        types = plot_types(name, train, out_dir)
        window = read_mask_window(run_dir)
        mask = plot_mask(name, window, out_dir) if window else []
        written += types + mask
        if types:
            index.append(f"- `{os.path.basename(types[0])}`: {name}, token-type fractions and KV fraction per "
                         "NAtS layer against step")
        if mask:
            index.append(f"- `{os.path.basename(mask[0])}`: {name}, learned token types and attention mask of the "
                         "first validation window (KV head 0 of each NAtS layer)")
        if not types and not mask:
            notes.append(f"{name}: dense attention, no token types: no type curves and no mask picture")
        elif not mask:
            notes.append(f"{name}: no mask picture ({run_dir}/mask_window.json is missing; `nats train` writes it "
                         "at the end of a run)")
    index += [f"- {note}" for note in notes]
    index_path = os.path.join(out_dir, "index.md")
    with open(index_path, "w") as f:
        f.write("\n".join(index) + "\n")
    for path in written + [index_path]:
        print(path)
    for note in notes:
        print(note)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
