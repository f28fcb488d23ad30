#!/usr/bin/python3
"""`nats plot --sweep SWEEP_DIR [--out DIR]`: scaling-law figures (PNG and SVG) of a `nats sweep` directory.

Reads SWEEP_DIR/results.csv (one row per cell, columns read by name; only status `ok` rows are data),
SWEEP_DIR/fit.json when `nats fit` has written it (without it the figures show the measurements only, and index.md
and stdout say so) and each cell's metrics.jsonl (the run_dir column, else SWEEP_DIR/cells/<cell>). Writes to --out
(default SWEEP_DIR/plots):
  isoflop         final loss vs N, one colour per FLOP budget, one marker per variant; Approach 2's parabolas
  loss_vs_params  loss vs N, one colour per token count D (bins); Approach 3's L(N, D) at those D
  frontier        compute-optimal N_opt(C), D_opt(C) (Approach 3, Approach 2, Chinchilla) and best loss vs C
  loss_vs_kv      per budget, loss vs KV fraction per variant (dense at 1); the fitted KV frontier
  curves          validation (and, faintly, training) loss vs FLOPs of every cell; the budgets as vertical lines
  index.md        what each figure shows, and what is missing (no fit, cells without metrics)
Prints the paths it wrote, then the notes. Exit status 1 when results.csv is missing, lacks columns or has no ok rows
(or fit.json is not JSON), 2 on bad arguments.
Budgets: the budget_flops column; where it is empty (a sweep with step or token horizons) the cells are grouped by
their flops rounded in log10 to 0.1. N is the non-embedding parameter count (params), D the tokens seen (tokens);
compute-optimal allocation uses C = 6 N D, as `nats fit` does.
Uses matplotlib from Debian (python3-matplotlib) with the non-interactive Agg backend.
"""
import argparse
import csv
import json
import math
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# SVG text stays text (searchable, editable, and smaller) instead of glyph outlines.
matplotlib.rcParams["svg.fonttype"] = "none"
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

REQUIRED = ("cell", "status", "variant", "params", "tokens", "loss")
NUMERIC = ("depth", "n_layer", "d_model", "nats_lambda", "budget_flops", "steps", "tokens", "params",
           "flops_per_token", "flops", "loss", "kv_fraction")
# Published Approach 3 constants (Hoffmann et al. 2022), the reference line when fit.json has no "chinchilla".
CHINCHILLA = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
N_LABEL = "non-embedding parameters N"
D_LABEL = "training tokens D"
C_LABEL = "training FLOPs C"
LOSS_LABEL = "validation loss (nats/token)"
DPI = 130
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "<", ">"]
LINESTYLES = ["-", "--", ":", "-.", (0, (5, 1, 1, 1)), (0, (1, 3)), (0, (8, 3))]


class SweepError(Exception):
    """A problem with the user's files: one line naming the file and the fix."""


def number(text):
    text = (text or "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def sci(x, digits=2):
    """1e+14 -> '1e14', 3.16e14 -> '3.2e14': compact labels for budgets and token counts."""
    if x is None or x <= 0:
        return str(x)
    exponent = int(math.floor(math.log10(x) + 1e-9))
    mantissa = round(x / 10 ** exponent, digits - 1)
    if mantissa >= 10:
        mantissa, exponent = mantissa / 10, exponent + 1
    text = f"{mantissa:.{digits - 1}f}".rstrip("0").rstrip(".")
    return f"{text}e{exponent}"


def count(x):
    """Parameter counts: 393216 -> '393k', 2.5e7 -> '25M'."""
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if x >= scale:
            return f"{x / scale:.3g}{suffix}"
    return f"{x:.3g}"


def read_rows(sweep_dir):
    """The ok rows of results.csv as dicts (numbers parsed, a budget key added), and counts of the others."""
    path = os.path.join(sweep_dir, "results.csv")
    if not os.path.isfile(path):
        raise SweepError(f"{path}: no such file; is {sweep_dir} the --out folder of `nats sweep`? "
                         "(run `nats sweep --grid SWEEP.textproto --out DIR` first)")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [c for c in REQUIRED if c not in header]
        if "budget_flops" not in header and "flops" not in header:
            missing.append("budget_flops or flops")
        if missing:
            raise SweepError(f"{path}: missing column(s) {', '.join(missing)}; it must be the results.csv "
                             "`nats sweep` writes (re-run `nats sweep` to rewrite it)")
        rows, others, skipped = [], {}, []
        for line, raw in enumerate(reader, 2):
            status = (raw.get("status") or "").strip()
            if status != "ok":
                others[status or "(empty)"] = others.get(status or "(empty)", 0) + 1
                continue
            row = {k: (v or "").strip() for k, v in raw.items() if k is not None}
            for key in NUMERIC:
                row[key] = number(raw.get(key))
            row["variant"] = row["variant"] or (row.get("attention") or "").lower() or "unnamed"
            if not row["params"] or row["params"] <= 0 or not row["tokens"] or row["tokens"] <= 0 or \
                    row["loss"] is None:
                skipped.append(f"{path}:{line}: cell {row['cell']} is ok but has no params, tokens or loss; skipped")
                continue
            if row["flops"] is None:
                row["flops"] = 6 * row["params"] * row["tokens"]
            row["kv"] = row["kv_fraction"] if row["kv_fraction"] else 1.0
            rows.append(row)
    if not rows:
        detail = ", ".join(f"{n} {s}" for s, n in sorted(others.items())) or "no rows at all"
        raise SweepError(f"{path}: no rows with status ok ({detail}); nothing to plot until cells finish "
                         "(`nats sweep` resumes the rest)")
    # Budgets: the planned budget_flops; a sweep without one is grouped by flops rounded in log10 to 0.1.
    for row in rows:
        planned = row["budget_flops"]
        row["budget"] = planned if planned else 10 ** round(math.log10(row["flops"]), 1)
    return rows, others, skipped


def read_fit(sweep_dir):
    path = os.path.join(sweep_dir, "fit.json")
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            fit = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SweepError(f"{path}: not JSON ({e}); re-run `nats fit {os.path.join(sweep_dir, 'results.csv')}` "
                         "or remove it for data-only figures")
    if not isinstance(fit, dict):
        raise SweepError(f"{path}: not a `nats fit` result (not a JSON object); re-run `nats fit`")
    return fit


def law3(p, n, d):
    return p["E"] + p["A"] / np.power(n, p["alpha"]) + p["B"] / np.power(d, p["beta"])


def is_number(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def positive(x):
    return is_number(x) and x > 0


def has_law(p, keys=("E", "A", "B", "alpha", "beta")):
    return isinstance(p, dict) and all(is_number(p.get(k)) for k in keys) and all(p[k] > 0 for k in keys[1:])


def optimum(p, c):
    """Compute-optimal N, D of L = E + A/N^alpha + B/D^beta under C = 6 N D (Hoffmann et al. 2022, eq. 4)."""
    a, b = p["alpha"], p["beta"]
    g = (a * p["A"] / (b * p["B"])) ** (1.0 / (a + b))
    n = g * np.power(np.asarray(c, dtype=float) / 6.0, b / (a + b))
    return n, np.asarray(c, dtype=float) / 6.0 / n


def same_budget(a, b):
    return abs(math.log10(a) - math.log10(b)) < 0.05


def by_budget(items, budget, key="flops"):
    return next((item for item in items or [] if isinstance(item, dict) and positive(item.get(key))
                 and same_budget(item[key], budget)), None)


class Style:
    """Colours and markers fixed once per sweep, so a variant or a budget looks the same in every figure."""

    def __init__(self, rows):
        variants = sorted({r["variant"] for r in rows},
                          key=lambda v: (v != "dense", self._lambda(rows, v), v))
        self.variants = variants
        self.main = "dense" if "dense" in variants else max(variants, key=lambda v: sum(r["variant"] == v
                                                                                        for r in rows))
        self.marker = {v: MARKERS[i % len(MARKERS)] for i, v in enumerate(variants)}
        self.linestyle = {v: LINESTYLES[i % len(LINESTYLES)] for i, v in enumerate(variants)}
        self.variant_colour = {v: "k" if v == "dense" else f"C{i % 10}" for i, v in enumerate(variants)}
        self.budgets = sorted({r["budget"] for r in rows})
        colours = plt.cm.viridis(np.linspace(0.0, 0.85, max(2, len(self.budgets))))
        self.budget_colour = {b: colours[i] for i, b in enumerate(self.budgets)}
        # A model size is one shape: the family depth when the sweep has one (a NAtS cell has a few more
        # parameters than its dense twin, the scorers, but is the same size), else the parameter count.
        self.sizes = sorted({self.size_key(r) for r in rows})
        colours = plt.cm.plasma(np.linspace(0.0, 0.85, max(2, len(self.sizes))))
        self.size_colour = {k: colours[i] for i, k in enumerate(self.sizes)}
        self.size_label = {}
        for k in self.sizes:
            same = [r for r in rows if self.size_key(r) == k]
            n = min(r["params"] for r in same)
            depth = same[0].get("depth")
            self.size_label[k] = f"L{int(depth)} d{int(same[0]['d_model'])}, N = {count(n)}" if depth else f"N = {count(n)}"

    @staticmethod
    def size_key(row):
        depth = row.get("depth")
        return (0, int(depth)) if depth else (1, row["params"])

    @staticmethod
    def _lambda(rows, variant):
        values = [r["nats_lambda"] for r in rows if r["variant"] == variant and r["nats_lambda"] is not None]
        return min(values) if values else 0.0


def legend_outside(ax, handles, title, top=1.0):
    """A legend right of the axes (never over the data); returns it so a second one can be stacked under it."""
    legend = ax.legend(handles=handles, title=title, loc="upper left", bbox_to_anchor=(1.02, top), fontsize=8,
                       title_fontsize=8.5, frameon=False, borderaxespad=0)
    ax.add_artist(legend)  # keeps it when the next ax.legend() replaces ax.legend_
    legend.set_clip_on(False)  # add_artist clips to the axes, which would hide a legend outside them
    return legend


def stacked_legends(fig, ax, groups):
    """Several legends right of the axes, one under the other (their heights known only once drawn)."""
    top = 1.0
    for title, handles in groups:
        if not handles:
            continue
        legend = legend_outside(ax, handles, title, top)
        fig.canvas.draw()
        box = legend.get_window_extent().transformed(ax.transAxes.inverted())
        top = box.y0 - 0.04


def save(fig, out_dir, stem):
    paths = []
    for ext in ("png", "svg"):
        path = os.path.join(out_dir, f"{stem}.{ext}")
        fig.savefig(path, dpi=DPI if ext == "png" else None, bbox_inches="tight")
        paths.append(path)
    plt.close(fig)
    return paths


def line(**kwargs):
    return Line2D([], [], **kwargs)


def variant_handles(style, variants, filled_main=True):
    handles = []
    for v in variants:
        main = v == style.main
        handles.append(line(color="0.3", marker=style.marker[v], ls="-" if main else ":", lw=1.8 if main else 1,
                            mfc="0.3" if main or not filled_main else "none", label=v))
    return handles


def budget_handles(style):
    return [line(color=style.budget_colour[b], lw=2.5, label=f"C = {sci(b)} FLOPs") for b in style.budgets]


def plot_isoflop(rows, fit, style, out_dir):
    fig, ax = plt.subplots(figsize=(8, 5))
    approach2 = (fit or {}).get("approach2") or {}
    fitted_budgets = approach2.get("budgets") or []
    drew_parabola = drew_unused = False
    for budget in style.budgets:
        colour = style.budget_colour[budget]
        group = [r for r in rows if r["budget"] == budget]
        for v in style.variants:
            cells = sorted((r for r in group if r["variant"] == v), key=lambda r: r["params"])
            if not cells:
                continue
            main = v == style.main
            ax.plot([r["params"] for r in cells], [r["loss"] for r in cells], marker=style.marker[v], color=colour,
                    ls="-" if main else ":", lw=1.8 if main else 1.0, ms=6 if main else 5,
                    mfc=colour if main else "none", mew=1.3, zorder=3 if main else 2)
        entry = by_budget(fitted_budgets, budget)
        coefficients = entry.get("parabola") if entry else None
        if isinstance(coefficients, list) and len(coefficients) == 3 and all(is_number(c) for c in coefficients):
            c0, c1, c2 = coefficients
            xs = np.log10([r["params"] for r in group if r["variant"] == style.main] or [r["params"] for r in group])
            grid = np.linspace(xs.min() - 0.15, xs.max() + 0.15, 100)
            used = entry.get("used") is not False
            ax.plot(10 ** grid, c0 + c1 * grid + c2 * grid ** 2, ls="--", color=colour if used else "0.6", lw=1.2,
                    alpha=0.9, zorder=1)
            drew_parabola = True
            if positive(entry.get("n_opt")) and is_number(entry.get("loss_min")):
                ax.plot(entry["n_opt"], entry["loss_min"], marker="*", ms=15, color=colour if used else "0.6",
                        mec="k", mew=0.8, ls="none", zorder=4)
            drew_unused |= not used
    ax.set_xscale("log")
    ax.set_xlabel(N_LABEL)
    ax.set_ylabel(LOSS_LABEL)
    ax.grid(alpha=0.3, which="both")
    title = "IsoFLOP curves: final loss vs model size at fixed training compute"
    if not fit:
        title += "\n(no fit.json: measured points only)"
    elif not fitted_budgets:
        title += "\n(fit.json has no Approach 2 parabolas)"
    ax.set_title(title, fontsize=11)
    marks = variant_handles(style, style.variants)
    if drew_parabola:
        marks.append(line(color="0.3", ls="--", lw=1.2, label="Approach 2 parabola"))
        marks.append(line(color="0.6", marker="*", ms=12, mec="k", ls="none", label="parabola minimum (N_opt)"))
    if drew_unused:
        marks.append(line(color="0.6", ls="--", label="parabola not used by the fit"))
    stacked_legends(fig, ax, [("budget", budget_handles(style)), (f"variant ({style.main}: solid)", marks)])
    return save(fig, out_dir, "isoflop")


def data_range(values):
    span = max(values) - min(values)
    return min(values) - 0.1 * span - 0.01, max(values) + 0.15 * span + 0.01


def token_groups(rows, max_groups=6):
    """Rows with the same token count D (within 1%), or None when there are more than max_groups counts (an
    IsoFLOP grid gives every cell its own D)."""
    groups = []
    for r in sorted(rows, key=lambda r: r["tokens"]):
        if groups and r["tokens"] <= groups[-1][0]["tokens"] * 1.01:
            groups[-1].append(r)
        else:
            groups.append([r])
    if len(groups) > max_groups:
        return None
    return [(float(np.exp(np.mean(np.log([r["tokens"] for r in g])))), g) for g in groups]


def token_levels(tokens):
    """Round token counts (1, 3 x 10^k) spanning the measured D, for the fitted curves of an IsoFLOP grid."""
    lo, hi = math.log10(min(tokens)), math.log10(max(tokens))
    levels = [m * 10 ** k for k in range(int(math.floor(lo)), int(math.ceil(hi)) + 1) for m in (1, 3)]
    inside = [d for d in levels if lo - 0.05 <= math.log10(d) <= hi + 0.05]
    return inside if len(inside) >= 2 else [10 ** lo, 10 ** hi]


def plot_loss_vs_params(rows, fit, style, out_dir):
    """Loss vs N per D. A grid of (N, D) has rows with equal D: one line per D. An IsoFLOP grid has one D per
    cell: the points are coloured by their D on a log colour scale, and the fitted curves are drawn at round D
    in the same colours, so a point is read against the curves of its colour."""
    fig, ax = plt.subplots(figsize=(8, 5))
    main = [r for r in rows if r["variant"] == style.main]
    groups = token_groups(main)
    p3 = (fit or {}).get("approach3")
    fitted = has_law(p3)
    sizes = [r["params"] for r in main]
    grid = np.logspace(math.log10(min(sizes)) - 0.2, math.log10(max(sizes)) + 0.2, 100)
    losses = [r["loss"] for r in main]
    if groups is not None:
        colours = plt.cm.viridis(np.linspace(0.0, 0.85, max(2, len(groups))))
        handles = []
        for (d, group), colour in zip(groups, colours):
            group = sorted(group, key=lambda r: r["params"])
            ax.plot([r["params"] for r in group], [r["loss"] for r in group], "o-", color=colour, lw=1.5, ms=6,
                    zorder=3)
            if fitted:
                ax.plot(grid, law3(p3, grid, d), "--", color=colour, lw=1.1, alpha=0.9, zorder=2)
            handles.append(line(color=colour, marker="o", lw=1.5, label=f"D = {sci(d)} ({len(group)} cells)"))
        if fitted:
            handles.append(line(color="0.3", ls="--", lw=1.1, label="Approach 3 fit L(N, D)"))
        legend_outside(ax, handles, "training tokens D")
    else:
        tokens = [r["tokens"] for r in main]
        norm = matplotlib.colors.LogNorm(vmin=min(tokens), vmax=max(tokens))
        cmap = plt.cm.viridis
        if fitted:
            low, high = data_range(losses)
            for d in token_levels(tokens):
                colour = cmap(norm(d))
                curve = law3(p3, grid, d)
                ax.plot(grid, curve, "--", color=colour, lw=1.3, zorder=2)
                inside = np.nonzero((curve >= low) & (curve <= high))[0]
                if len(inside):  # name the curve where it leaves the plot (its right end, or the bottom)
                    k = inside[-1]
                    ax.annotate(f"D={sci(d, 1)}", (grid[k], curve[k]), textcoords="offset points", xytext=(-2, 3),
                                fontsize=7.5, color=colour, ha="right", va="bottom")
        points = ax.scatter(sizes, losses, c=tokens, cmap=cmap, norm=norm, s=45, edgecolors="k", linewidths=0.6,
                            zorder=3)
        bar = fig.colorbar(points, ax=ax, pad=0.1)
        bar.set_label(f"{D_LABEL} (colour of points and curves)" if fitted else D_LABEL)
        handles = [line(color="0.5", marker="o", mec="k", ls="none", label=f"measured {style.main} cell")]
        if fitted:
            handles.append(line(color="0.3", ls="--", lw=1.3, label="Approach 3 fit L(N, D) at the D written"))
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, fontsize=8.5,
                  frameon=False)
    ax.set_ylim(*data_range(losses))  # the fitted curves run far above the data at small N and D
    ax.set_xscale("log")
    ax.set_xlabel(N_LABEL)
    ax.set_ylabel(LOSS_LABEL)
    ax.grid(alpha=0.3, which="both")
    title = f"Loss vs model size per token count D ({style.main} cells)"
    if not fitted:
        title += "\n(no Approach 3 fit: measured points only)"
    ax.set_title(title, fontsize=11)
    return save(fig, out_dir, "loss_vs_params")


def best_per_budget(rows, variant):
    best = {}
    for r in rows:
        if r["variant"] == variant and (r["budget"] not in best or r["loss"] < best[r["budget"]]["loss"]):
            best[r["budget"]] = r
    return [best[b] for b in sorted(best)]


def plot_frontier(rows, fit, style, out_dir):
    fig, axes = plt.subplots(1, 3, figsize=(16, 5))
    fit = fit or {}
    p3 = fit.get("approach3") if has_law(fit.get("approach3")) else None
    approach2 = fit.get("approach2") or {}
    chinchilla = fit.get("chinchilla") if has_law(fit.get("chinchilla")) else CHINCHILLA
    allocation = [a for a in (p3 or {}).get("allocation") or []
                  if isinstance(a, dict) and positive(a.get("flops")) and positive(a.get("n_opt"))
                  and positive(a.get("d_opt"))]
    flops = list(style.budgets) + [a["flops"] for a in allocation]
    c_grid = np.logspace(math.log10(min(flops)) - 0.5, math.log10(max(flops)) + 0.5, 100)
    best = best_per_budget(rows, style.main)
    for panel, (ax, what) in enumerate(zip(axes[:2], ("n", "d"))):
        key, label = ("n_opt", "N_opt") if what == "n" else ("d_opt", "D_opt")
        tex = "N_{opt}" if what == "n" else "D_{opt}"
        pick = lambda nd: nd[0] if what == "n" else nd[1]
        if p3:
            exponent = p3.get("n_exponent" if what == "n" else "d_exponent")
            if not is_number(exponent):  # N_opt ~ C^(beta / (alpha + beta)), D_opt ~ C^(alpha / (alpha + beta))
                exponent = pick((p3["beta"], p3["alpha"])) / (p3["alpha"] + p3["beta"])
            ax.plot(c_grid, pick(optimum(p3, c_grid)), color="C0", lw=2,
                    label=f"Approach 3: ${tex} \\propto C^{{{exponent:.3f}}}$")
            ci = [a for a in allocation if isinstance(a.get("tokens_per_param_ci95"), list)
                  and len(a["tokens_per_param_ci95"]) == 2 and all(positive(x) for x in a["tokens_per_param_ci95"])]
            if ci:
                cs = np.array([a["flops"] for a in ci])
                lo = np.array([a["tokens_per_param_ci95"][0] for a in ci])
                hi = np.array([a["tokens_per_param_ci95"][1] for a in ci])
                # C = 6 N D and D = r N: N = sqrt(C / 6r), D = sqrt(C r / 6); more tokens per parameter, smaller N.
                band = (np.sqrt(cs / (6 * hi)), np.sqrt(cs / (6 * lo))) if what == "n" else \
                    (np.sqrt(cs * lo / 6), np.sqrt(cs * hi / 6))
                order = np.argsort(cs)
                ax.fill_between(cs[order], band[0][order], band[1][order], color="C0", alpha=0.15, lw=0,
                                label="95% interval (tokens per parameter)")
            if allocation:
                ax.plot([a["flops"] for a in allocation], [a[key] for a in allocation], "o", color="C0", ms=5,
                        label="Approach 3 allocation (fit.json)")
        minima = [b for b in approach2.get("budgets") or []
                  if isinstance(b, dict) and positive(b.get(key)) and positive(b.get("flops"))]
        if minima:
            used = [b for b in minima if b.get("used") is not False]
            ax.plot([b["flops"] for b in used], [b[key] for b in used], "s", color="C1", ms=7, mec="k", mew=0.6,
                    label="Approach 2 parabola minima")
            unused = [b for b in minima if b.get("used") is False]
            if unused:
                ax.plot([b["flops"] for b in unused], [b[key] for b in unused], "s", color="none", mec="C1",
                        ms=7, label="Approach 2 minima not used")
            law = approach2.get(f"{key}_law")
            if isinstance(law, dict) and positive(law.get("coefficient")) and is_number(law.get("exponent")):
                ax.plot(c_grid, law["coefficient"] * c_grid ** law["exponent"], "--", color="C1", lw=1.5,
                        label=f"Approach 2: ${tex} = {law['coefficient']:.3g}\\,C^{{{law['exponent']:.3f}}}$")
        ax.plot(c_grid, pick(optimum(chinchilla, c_grid)), ":", color="0.45", lw=1.8,
                label="Chinchilla (Hoffmann et al. 2022)")
        ax.plot([r["budget"] for r in best], [r["params"] if what == "n" else r["tokens"] for r in best], "x",
                color="k", ms=8, mew=2, label=f"best measured {style.main} cell")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(C_LABEL)
        ax.set_ylabel(f"compute-optimal {N_LABEL if what == 'n' else D_LABEL}")
        ax.set_title(f"${tex}(C)$ under C = 6 N D", fontsize=11)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7.5, loc="upper left", framealpha=0.85)
    ax = axes[2]
    for v in style.variants:
        cells = best_per_budget(rows, v)
        main = v == style.main
        ax.plot([r["budget"] for r in cells], [r["loss"] for r in cells], marker=style.marker[v],
                color=style.variant_colour[v], ls="-" if main else ":", lw=1.5 if main else 1, ms=7 if main else 6,
                mfc=style.variant_colour[v] if main else "none", label=f"best measured: {v}")
    if p3:
        n, d = optimum(p3, c_grid)
        ax.plot(c_grid, law3(p3, n, d), color="C0", lw=2,
                label=f"Approach 3: $L(N_{{opt}}, D_{{opt}})$ (E = {p3['E']:.3g})")
        if allocation and all(is_number(a.get("loss")) for a in allocation):
            ax.plot([a["flops"] for a in allocation], [a["loss"] for a in allocation], "o", color="C0", ms=5)
    ax.set_xscale("log")
    ax.set_xlabel(C_LABEL)
    ax.set_ylabel(LOSS_LABEL)
    ax.set_title("best measured loss per budget vs the fitted optimum" if p3 else "best measured loss per budget",
                 fontsize=11)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7.5, loc="upper right", framealpha=0.85)
    title = "Compute-optimal frontier"
    if not fit:
        title += " (no fit.json: measurements and Chinchilla's published law only)"
    elif not p3:
        title += " (fit.json has no Approach 3 fit)"
    fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    return save(fig, out_dir, "frontier")


def plot_loss_vs_kv(rows, fit, style, out_dir):
    budgets = style.budgets
    columns = 2 if len(budgets) == 4 else min(3, len(budgets))
    lines = math.ceil(len(budgets) / columns)
    fig, axes = plt.subplots(lines, columns, figsize=(5.3 * columns, 4.6 * lines), squeeze=False)
    kv_fit = (fit or {}).get("kv") or {}
    frontier = kv_fit.get("frontier") or []
    drew_frontier = False
    for i, budget in enumerate(budgets):
        ax = axes[i // columns][i % columns]
        group = [r for r in rows if r["budget"] == budget]
        best = []
        for v in style.variants:
            cells = [r for r in group if r["variant"] == v]
            if not cells:
                continue
            colour = style.variant_colour[v]
            ax.plot([r["kv"] for r in cells], [r["loss"] for r in cells], style.marker[v], color=colour, alpha=0.3,
                    ms=5, mew=0, zorder=2)
            top = min(cells, key=lambda r: r["loss"])
            best.append(top)
            ax.plot(top["kv"], top["loss"], style.marker[v], color=colour, ms=9, mec="k", mew=0.8, zorder=4)
            ax.annotate(f"N={count(top['params'])}", (top["kv"], top["loss"]), textcoords="offset points",
                        xytext=(6, 6), fontsize=7, color="0.25")
        best.sort(key=lambda r: r["kv"])
        ax.plot([r["kv"] for r in best], [r["loss"] for r in best], "-", color="0.5", lw=1, zorder=3)
        entry = by_budget(frontier, budget)
        drew_here = False
        if entry and isinstance(entry.get("kv"), list) and isinstance(entry.get("loss"), list) and \
                len(entry["kv"]) == len(entry["loss"]) > 0:
            ax.plot(entry["kv"], [v if is_number(v) else np.nan for v in entry["loss"]], "--", color="C3", lw=1.6,
                    zorder=3)
            drew_frontier = drew_here = True
        ax.set_xlim(0, 1.05)
        # Keep the best cells readable: the faint off-optimum sizes may lie far above them.
        tops = [r["loss"] for r in best] + [v for v in (entry["loss"] if drew_here else []) if is_number(v)]
        span = max(tops) - min(tops)
        ax.set_ylim(min(tops) - max(0.25 * span, 0.02), max(tops) + max(1.0 * span, 0.08))
        ax.set_title(f"C = {sci(budget)} FLOPs", fontsize=10)
        ax.set_xlabel("KV fraction (share of the dense KV cache kept; dense = 1)", fontsize=9)
        if i % columns == 0:
            ax.set_ylabel(LOSS_LABEL)
        ax.grid(alpha=0.3)
    for j in range(len(budgets), lines * columns):
        axes[j // columns][j % columns].axis("off")
    handles = [line(color=style.variant_colour[v], marker=style.marker[v], ls="none", ms=8, mec="k", mew=0.8,
                    label=f"{v}: best over N") for v in style.variants]
    handles.append(line(color="0.5", marker="o", ls="none", alpha=0.3, mew=0, label="all sizes (faint)"))
    if drew_frontier:
        handles.append(line(color="C3", ls="--", lw=1.6, label="fitted KV frontier L(N_opt, D_opt, kv)"))
    fig.legend(handles=handles, loc="lower center", ncol=min(4, len(handles)), fontsize=8.5, frameon=False,
               bbox_to_anchor=(0.5, -0.02))
    title = "Loss vs KV fraction per budget"
    nats = any(r["kv"] < 1 for r in rows)
    if not nats:
        title += " (no NAtS rows: dense only)"
    elif not drew_frontier:
        title += " (no KV fit in fit.json: measured points only)" if fit else " (no fit.json: measured points only)"
    fig.suptitle(title, fontsize=12)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return save(fig, out_dir, "loss_vs_kv")


def read_cell_metrics(sweep_dir, row):
    """(train, eval) records of one cell, or None when it has no metrics.jsonl."""
    candidates = []
    if row.get("run_dir"):
        candidates.append(row["run_dir"])
        if not os.path.isabs(row["run_dir"]):
            candidates.append(os.path.join(sweep_dir, row["run_dir"]))
    candidates.append(os.path.join(sweep_dir, "cells", row["cell"]))
    path = next((os.path.join(c, "metrics.jsonl") for c in candidates
                 if os.path.isfile(os.path.join(c, "metrics.jsonl"))), None)
    if not path:
        return None
    train, evals = {}, {}
    with open(path) as f:
        for text in f:
            try:
                record = json.loads(text)
            except json.JSONDecodeError:
                continue  # a cell killed mid-write leaves a partial last line
            if not isinstance(record, dict) or record.get("rank", 0) != 0 or "step" not in record:
                continue
            if record.get("kind") == "train" and isinstance(record.get("loss"), (int, float)):
                train[record["step"]] = record["loss"]
            elif record.get("kind") == "eval" and isinstance(record.get("val_loss"), (int, float)):
                evals[record["step"]] = record["val_loss"]
    # A resumed cell appends: a step logged twice keeps its newest value.
    return sorted(train.items()), sorted(evals.items())


def plot_curves(rows, sweep_dir, style, out_dir):
    fig, ax = plt.subplots(figsize=(9, 5.5))
    missing, drawn, finals, starts = [], 0, [], []
    for r in sorted(rows, key=lambda r: (style.size_key(r), r["variant"])):
        metrics = read_cell_metrics(sweep_dir, r)
        if metrics is None:
            missing.append(r["cell"])
            continue
        train, evals = metrics
        if not r["steps"] or not r["flops_per_token"]:
            missing.append(r["cell"])
            continue
        # FLOPs at step s = s * (tokens / steps) * flops_per_token, from the cell's row.
        per_step = r["tokens"] / r["steps"] * r["flops_per_token"]
        colour, ls = style.size_colour[style.size_key(r)], style.linestyle[r["variant"]]
        # Step 0 (the evaluation before training) has no place on a log FLOPs axis.
        train = [(s, v) for s, v in train if s > 0]
        evals = [(s, v) for s, v in evals if s > 0]
        if train:
            # The training loss, averaged over 5 log records (a mini-batch's loss is noisy), is the curve;
            # the validation evaluations are its markers.
            values = np.array([v for _, v in train])
            width = min(5, len(values))
            smooth = np.convolve(values, np.ones(width) / width, mode="valid")
            steps = [s for s, _ in train][width - 1:]
            ax.plot([s * per_step for s in steps], smooth, color=colour, ls=ls,
                    lw=1.6 if r["variant"] == style.main else 1.1, alpha=0.9)
            starts.append(steps[0] * per_step)
        if evals:
            ax.plot([s * per_step for s, _ in evals], [v for _, v in evals], color=colour, ls="none", marker="o",
                    ms=3.5 if r["variant"] == style.main else 2.5, mec="none")
            finals.append(evals[-1][1])
        drawn += 1
    for budget in style.budgets:
        ax.axvline(budget, color="0.35", ls=(0, (2, 2)), lw=1, zorder=0)
        ax.text(budget, 0.985, f"C = {sci(budget)} ", transform=ax.get_xaxis_transform(), fontsize=8, color="0.3",
                va="top", ha="right", rotation=90)
    ax.set_xscale("log")
    if finals:
        low = min(finals)
        ax.set_ylim(low * 0.95, low * 1.7)  # the first steps (near log V) would flatten the rest
        ax.set_xlim(min(starts) * 0.8, max(style.budgets) * 1.5)
    ax.set_xlabel(f"{C_LABEL} (step x tokens/step x FLOPs/token)")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(f"Training curves of {drawn} cells: training loss (lines, 5-record mean), validation (dots)\n"
                 "dashed verticals: the IsoFLOP budgets", fontsize=11)
    ax.grid(alpha=0.3, which="both")
    sizes = [line(color=style.size_colour[k], lw=2, label=style.size_label[k]) for k in style.sizes]
    variants = [line(color="0.3", ls=style.linestyle[v], lw=1.4, label=v) for v in style.variants]
    stacked_legends(fig, ax, [("model size", sizes), ("variant", variants)])
    return save(fig, out_dir, "curves"), drawn, missing


def main(argv):
    parser = argparse.ArgumentParser(prog="nats plot --sweep", description=__doc__.split("\n")[0])
    parser.add_argument("sweep", metavar="SWEEP_DIR", help="the --out folder of `nats sweep`")
    parser.add_argument("--out", help="output folder (default: SWEEP_DIR/plots)")
    args = parser.parse_args(argv)
    try:
        rows, others, skipped = read_rows(args.sweep)
        fit = read_fit(args.sweep)
    except SweepError as e:
        print(f"nats plot: {e}", file=sys.stderr)
        return 1
    for message in skipped:
        print(f"warning: {message}", file=sys.stderr)
    out_dir = args.out or os.path.join(args.sweep, "plots")
    os.makedirs(out_dir, exist_ok=True)
    style = Style(rows)
    notes = []
    if not fit:
        notes.append(f"no fit.json in {args.sweep}: data-only figures (run `nats fit "
                     f"{os.path.join(args.sweep, 'results.csv')}` for the fitted curves)")
    else:
        if not has_law(fit.get("approach3")):
            notes.append("fit.json has no Approach 3 fit: no fitted L(N, D) curves or N_opt(C) line")
        if not (fit.get("approach2") or {}).get("budgets"):
            notes.append("fit.json has no Approach 2 result: no IsoFLOP parabolas")
        if not (fit.get("kv") or {}).get("frontier"):
            notes.append("fit.json has no KV fit: loss_vs_kv shows measured points only")
    figures = []
    figures.append((plot_isoflop(rows, fit, style, out_dir),
                    "IsoFLOP curves: final validation loss vs non-embedding parameters N, one colour per FLOP "
                    f"budget, {style.main} solid and filled, other variants dotted and hollow"
                    + ("; Approach 2's parabola per budget and its minimum (star)" if fit and
                       (fit.get("approach2") or {}).get("budgets") else "")))
    figures.append((plot_loss_vs_params(rows, fit, style, out_dir),
                    f"loss vs N per token count D ({style.main} cells; one line per D, or points coloured by D "
                    "when every cell has its own)"
                    + ("; Approach 3's fitted L(N, D) at those D (dashed)"
                       if fit and has_law(fit.get("approach3")) else "")))
    figures.append((plot_frontier(rows, fit, style, out_dir),
                    "compute-optimal frontier: N_opt(C) and D_opt(C) (Approach 3 line and 95% band, Approach 2 "
                    "minima and power law, Chinchilla's law for reference, best measured cells), and the best "
                    "measured loss per budget per variant vs C with the fitted loss at the optimum"))
    figures.append((plot_loss_vs_kv(rows, fit, style, out_dir),
                    "per budget: loss vs KV fraction (dense at 1), the best size per variant (bold, labelled "
                    "with N) and all sizes (faint)" + ("; the fitted KV frontier (dashed)" if fit and
                                                       (fit.get("kv") or {}).get("frontier") else "")))
    curves, drawn, missing = plot_curves(rows, args.sweep, style, out_dir)
    figures.append((curves, f"training curves of {drawn} cells: validation loss (and training loss, faint) vs "
                            "training FLOPs, one colour per model size, one line style per variant; the budgets "
                            "as vertical lines"))
    if missing:
        notes.append(f"{len(missing)} ok cell(s) without metrics.jsonl (or steps / flops_per_token) are not in "
                     f"curves: {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
    if others:
        notes.append("cells that are not data: " + ", ".join(f"{n} {s}" for s, n in sorted(others.items())))
    index = ["# nats plot --sweep", "",
             f"Sweep `{args.sweep}`: {len(rows)} ok cells, {len(style.budgets)} budgets, variants "
             f"{', '.join(style.variants)}; "
             + (f"fit: `{os.path.join(args.sweep, 'fit.json')}`." if fit else "no fit.json: data-only figures."), ""]
    for paths, text in figures:
        index.append(f"- `{os.path.basename(paths[0])}` (+ `.svg`): {text}")
    if notes:
        index += ["", "Notes:", ""] + [f"- {note}" for note in notes]
    index_path = os.path.join(out_dir, "index.md")
    with open(index_path, "w") as f:
        f.write("\n".join(index) + "\n")
    for paths, _ in figures:
        for path in paths:
            print(path)
    print(index_path)
    for note in notes:
        print(note)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
