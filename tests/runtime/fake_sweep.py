#!/usr/bin/python3
"""A fabricated `nats sweep` directory (and the fit.json `nats fit` would write) for testing `nats plot --sweep`.

usage: fake_sweep.py SWEEP_DIR [--no-fit] [--no-budget] [--dense-only]

The rows follow a known law, L = E + A / N^alpha + B / D^beta + K (1 - kv)^gamma, with small noise: three IsoFLOP
budgets (1e14, 1e15, 1e16) x four model sizes each (six sizes in all, shifted so that every budget's optimum lies
inside its sizes) x three variants (dense, nats_l1e-05, nats_l1e-04), plus one failed and one pending cell. Every ok
cell has a metrics.jsonl (train and eval records along the law, and lines of other kinds to be ignored).
fit.json is not a fit: Approach 3 and the KV law are the true constants, slightly perturbed, with made-up intervals;
Approach 2's parabolas are real least-squares fits of the dense rows (numpy), as `nats fit` would make them.
--no-fit: no fit.json. --no-budget: budget_flops left empty (a sweep with step horizons). --dense-only: no NAtS rows.
"""
import argparse
import csv
import json
import math
import os
import random
import sys

import numpy as np

TRUE = {"E": 1.6, "A": 60.0, "B": 100.0, "alpha": 0.32, "beta": 0.30, "K": 0.12, "gamma": 2.0}
CHINCHILLA = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
BUDGETS = [1e14, 1e15, 1e16]
DEPTHS = [2, 3, 4, 5, 6, 8]  # n_layer = depth, d_model = 64 depth, n_head = depth: N = 12 n_layer d_model^2
VARIANTS = [("dense", "DENSE", None, 1.0), ("nats_l1e-05", "NATS", 1e-5, 0.38), ("nats_l1e-04", "NATS", 1e-4, 0.16)]
VOCAB, CONTEXT, TOKENS_PER_STEP, WINDOW = 50304, 256, 4096, 64
COLUMNS = ("cell,status,variant,attention,depth,n_layer,d_model,n_head,nats_lambda,nats_window,seed,budget_flops,"
           "steps,tokens,params,params_total,params_non_embedding,params_embedding,flops_per_token,flops,"
           "flops_executed,loss,final_val_loss,best_val_loss,val_bpb,kv_fraction,frac_global,frac_local,"
           "frac_sliding,mask_density,tokens_per_s,wall_s,config_hash,run_dir").split(",")


def law(n, d, kv=1.0, p=TRUE):
    loss = p["E"] + p["A"] / n ** p["alpha"] + p["B"] / d ** p["beta"]
    return loss + p.get("K", 0.0) * (1.0 - kv) ** p.get("gamma", 1.0)


def optimum(c, p):
    """Compute-optimal N, D of L = E + A/N^a + B/D^b under C = 6 N D (Hoffmann et al. 2022, eq. 4)."""
    a, b = p["alpha"], p["beta"]
    g = (a * p["A"] / (b * p["B"])) ** (1.0 / (a + b))
    n = g * (c / 6.0) ** (b / (a + b))
    return n, c / 6.0 / n


def allocation(p, budgets, ci=None):
    rows = []
    for c in budgets:
        n, d = optimum(c, p)
        row = {"flops": c, "n_opt": n, "d_opt": d, "tokens_per_param": d / n, "loss": law(n, d, 1.0, p)}
        if ci:
            row["tokens_per_param_ci95"] = [d / n * (1 - ci), d / n * (1 + ci)]
        rows.append(row)
    return rows


def write_metrics(path, row, n, kv, nats, rng, partial_last_line):
    steps, tokens = row["steps"], row["tokens"]
    per_step = tokens / steps
    log_every, eval_every = max(1, steps // 60), max(1, steps // 12)
    layers = row["n_layer"]
    lines = []
    for s in range(1, steps + 1):
        d = s * per_step
        if s % log_every == 0 or s == 1:
            train = {"kind": "train", "step": s, "loss": min(math.log(VOCAB), law(n, d, kv) + rng.gauss(-0.01, 0.03)),
                     "lr": 1e-3, "tokens_per_s": row["tokens_per_s"]}
            if nats:
                now = kv + (1 - kv) * math.exp(-5.0 * s / steps)
                train["kv_fraction"] = [round(now * (0.9 + 0.2 * l / max(1, layers - 1)), 4) for l in range(layers)]
            lines.append(json.dumps(train))
        if s % eval_every == 0 or s == steps:
            val = row["loss"] if s == steps else min(math.log(VOCAB), law(n, d, kv) + rng.gauss(0, 0.005))
            lines.append(json.dumps({"kind": "eval", "step": s, "val_loss": val, "val_bpb": val / math.log(2) / 4}))
        if s == steps // 2:
            lines.append(json.dumps({"kind": "checkpoint", "step": s, "path": "ckpt"}))
            lines.append(json.dumps({"kind": "bad_step", "step": s, "loss": 99.0}))
    text = "\n".join(lines) + "\n"
    if partial_last_line:
        text += '{"kind": "train", "step": '  # a run killed mid-write
    with open(path, "w") as f:
        f.write(text)


def fabricate(sweep_dir, with_fit, with_budget, dense_only, seed=12):
    rng = random.Random(seed)
    os.makedirs(os.path.join(sweep_dir, "cells"), exist_ok=True)
    variants = VARIANTS[:1] if dense_only else VARIANTS
    rows = []
    for b, c in enumerate(BUDGETS):
        for depth in DEPTHS[b:b + 4]:
            for name, attention, lam, kv_target in variants:
                n_layer, d_model = depth, 64 * depth
                n = 12 * n_layer * d_model ** 2
                nats = attention == "NATS"
                kv = min(1.0, kv_target * (1.1 - 0.05 * b)) if nats else 1.0
                steps = max(10, round(c / (6 * n) / TOKENS_PER_STEP))
                tokens = steps * TOKENS_PER_STEP
                fpt = 6 * n + 6 * n_layer * CONTEXT * d_model * kv
                cell = f"b{c:.0e}_d{depth}_{name}".replace("+", "")
                run_dir = os.path.abspath(os.path.join(sweep_dir, "cells", cell))
                loss = law(n, tokens, kv) + rng.gauss(0, 0.008)
                global_frac = 0.04
                row = {
                    "cell": cell, "status": "ok", "variant": name, "attention": attention, "depth": depth,
                    "n_layer": n_layer, "d_model": d_model, "n_head": depth, "nats_lambda": lam if nats else "",
                    "nats_window": WINDOW if nats else "", "seed": 0, "budget_flops": c if with_budget else "",
                    "steps": steps, "tokens": tokens, "params": n, "params_total": n + VOCAB * d_model,
                    "params_non_embedding": n, "params_embedding": VOCAB * d_model, "flops_per_token": fpt,
                    "flops": fpt * tokens, "flops_executed": fpt * tokens * (1.02 if nats else 1.0), "loss": loss,
                    "final_val_loss": loss, "best_val_loss": loss - 0.002, "val_bpb": loss / math.log(2) / 4,
                    "kv_fraction": round(kv, 4) if nats else "", "frac_global": global_frac if nats else "",
                    "frac_local": round(kv - global_frac, 4) if nats else "",
                    "frac_sliding": round(1 - kv, 4) if nats else "",
                    "mask_density": round(kv * 0.9, 4) if nats else "",
                    "tokens_per_s": round(3e10 / fpt), "wall_s": 0.0, "config_hash": f"{rng.getrandbits(48):012x}",
                    "run_dir": run_dir}
                row["wall_s"] = round(tokens / row["tokens_per_s"], 1)
                os.makedirs(run_dir, exist_ok=True)
                write_metrics(os.path.join(run_dir, "metrics.jsonl"), row, n, kv, nats, rng,
                              partial_last_line=len(rows) == 0)
                rows.append(row)
    for status in ("failed", "pending"):  # cells that are not data
        cell = f"b1e16_d10_dense_{status}"
        row = {k: "" for k in COLUMNS}
        row.update({"cell": cell, "status": status, "variant": "dense", "attention": "DENSE", "depth": 10,
                    "n_layer": 10, "d_model": 640, "n_head": 10, "seed": 0, "budget_flops": 1e16 if with_budget else "",
                    "params": 12 * 10 * 640 ** 2, "run_dir": os.path.abspath(os.path.join(sweep_dir, "cells", cell))})
        rows.append(row)
    with open(os.path.join(sweep_dir, "results.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    with open(os.path.join(sweep_dir, "results.jsonl"), "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    if with_fit:
        with open(os.path.join(sweep_dir, "fit.json"), "w") as f:
            json.dump(fake_fit(sweep_dir, rows, dense_only), f, indent=2)
    return rows


def fake_fit(sweep_dir, rows, dense_only):
    ok = [r for r in rows if r["status"] == "ok"]
    p3 = {k: v * (1 + 0.02 * (i % 3 - 1)) for i, (k, v) in enumerate(TRUE.items()) if k not in ("K", "gamma")}
    a, b = p3["alpha"], p3["beta"]
    approach3 = {
        "form": "L = E + A / N^alpha + B / D^beta", **p3,
        "ci95": {k: [v * 0.93, v * 1.07] for k, v in p3.items()},
        "huber_delta": 0.001, "objective": 2.1e-5, "starts": 4500, "lbfgs_starts": 32, "bootstrap": 100,
        "seconds": 3.2, "n_exponent": b / (a + b), "d_exponent": a / (a + b),
        "allocation": allocation(p3, BUDGETS + [1e17], ci=0.25)}
    budgets, minima = [], []
    for c in BUDGETS:
        dense = [r for r in ok if r["variant"] == "dense" and abs(math.log10(r["flops"] / c)) < 0.1]
        x = np.log10([r["params"] for r in dense])
        c2, c1, c0 = np.polyfit(x, [r["loss"] for r in dense], 2)
        x_min = -c1 / (2 * c2)
        n_opt = 10 ** x_min
        budgets.append({"flops": c, "points": len(dense), "parabola": [c0, c1, c2], "n_opt": n_opt,
                        "d_opt": c / (6 * n_opt), "loss_min": c0 + c1 * x_min + c2 * x_min ** 2,
                        "used": bool(c2 > 0), "note": "" if c2 > 0 else "parabola opens downwards"})
        minima.append((c, n_opt))
    logc, logn = np.log10([m[0] for m in minima]), np.log10([m[1] for m in minima])
    slope, intercept = np.polyfit(logc, logn, 1)
    approach2 = {"budgets": budgets, "n_opt_law": {"coefficient": 10 ** intercept, "exponent": slope},
                 "d_opt_law": {"coefficient": 10 ** -intercept / 6, "exponent": 1 - slope}}
    kv = None
    if not dense_only:
        pk = {k: v * 1.01 for k, v in TRUE.items()}
        grid = [round(0.05 * i, 2) for i in range(1, 21)]
        frontier = []
        for c in BUDGETS:
            n, d = optimum(c, pk)
            frontier.append({"flops": c, "kv": grid, "loss": [law(n, d, g, pk) for g in grid]})
        kv = {"form": "L = E + A / N^alpha + B / D^beta + K (1 - kv)^gamma", **pk,
              "ci95": {k: [v * 0.9, v * 1.1] for k, v in pk.items()}, "objective": 3.0e-5, "frontier": frontier}
    return {
        "input": os.path.join(sweep_dir, "results.csv"),
        "columns": {"params": "params", "tokens": "tokens", "loss": "loss", "kv": None if dense_only else "kv_fraction",
                    "budget": "budget_flops"},
        "rows_read": len(rows), "rows_used": len(ok),
        "rows_skipped": [{"line": i + 2, "reason": f"status {r['status']}"} for i, r in enumerate(rows)
                         if r["status"] != "ok"],
        "approach3": approach3, "approach2": approach2, "kv": kv,
        "chinchilla": {**CHINCHILLA, "allocation": allocation(CHINCHILLA, BUDGETS + [1e17])}}


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("sweep_dir")
    parser.add_argument("--no-fit", action="store_true")
    parser.add_argument("--no-budget", action="store_true")
    parser.add_argument("--dense-only", action="store_true")
    args = parser.parse_args(argv)
    rows = fabricate(args.sweep_dir, not args.no_fit, not args.no_budget, args.dense_only)
    print(f"{args.sweep_dir}: {len(rows)} cells" + ("" if args.no_fit else " + fit.json"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
