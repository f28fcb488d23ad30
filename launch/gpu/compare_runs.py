#!/usr/bin/env python3
"""Compares the training runs of launch/gpu/device_check.sh (their metrics.jsonl) and writes WORK/compare.jsonl.

Checks, with the tolerances they are held to:
- cuda_vs_cpu_fp32: the same seed, data and config on CUDA and on CPU. Step 1 (same weights, same batch, no
  update yet) must agree to 1e-3; over 30 steps the curves may drift apart by float rounding amplified by
  Adam and by hard type choices that flip on near-ties: max |diff| <= 0.05.
- nccl_world1_vs_local: the CUDA run again with parallel.backend=NCCL at world size 1 (every collective an
  identity): the same losses to 1e-5.
- bf16_trains: the bf16 run's loss falls by >= 0.5 over its 30 steps and ends within 0.15 of the fp32 run.
- resume_on_cpu / resume_on_cuda: 20 steps on CUDA, saved, resumed on the CPU (or CUDA) to step 30; steps
  21..30 against the uninterrupted CUDA run: <= 0.05 on CPU (another device from step 21), <= 1e-3 on CUDA
  (exact resume on the same device).
usage: compare_runs.py WORK
"""
import json
import os
import sys


def losses(run_dir):
    path = os.path.join(run_dir, "metrics.jsonl")
    out = {}
    if not os.path.exists(path):
        return out
    with open(path) as f:
        for line in f:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("kind") == "train" and "loss" in rec and "step" in rec:
                out[int(rec["step"])] = float(rec["loss"])
    return out


def compare(name, a, b, steps, tol, extra=None):
    common = [s for s in steps if s in a and s in b]
    rec = {"step": name, "seconds": 0}
    if not a or not b:
        rec.update(status="skipped", why="a run is missing (its own step says why)")
    elif not common:
        rec.update(status="failed", why="no common steps")
    else:
        diff = max(abs(a[s] - b[s]) for s in common)
        rec.update(status="ok" if diff <= tol else "failed", max_abs_diff=round(diff, 6), tolerance=tol,
                   steps=len(common))
        if extra:
            rec.update(extra)
    return rec


def main():
    work = sys.argv[1]
    cpu = losses(os.path.join(work, "run_cpu"))
    cuda = losses(os.path.join(work, "run_cuda"))
    bf16 = losses(os.path.join(work, "run_bf16"))
    rcpu = losses(os.path.join(work, "run_resume_cpu"))
    rcuda = losses(os.path.join(work, "run_resume_cuda"))
    nccl = losses(os.path.join(work, "run_nccl"))
    records = [
        compare("cuda_vs_cpu_fp32_step1", cuda, cpu, [1], 1e-3),
        compare("cuda_vs_cpu_fp32_curve", cuda, cpu, range(1, 31), 0.05,
                {"final_cpu": cpu.get(30), "final_cuda": cuda.get(30)}),
        compare("nccl_world1_vs_local", nccl, cuda, range(1, 31), 1e-5),
        compare("resume_on_cpu", rcpu, cuda, range(21, 31), 0.05),
        compare("resume_on_cuda", rcuda, cuda, range(21, 31), 1e-3),
    ]
    rec = {"step": "bf16_trains", "seconds": 0}
    if 1 in bf16 and 30 in bf16 and 30 in cuda:
        fell, gap = bf16[1] - bf16[30], abs(bf16[30] - cuda[30])
        rec.update(status="ok" if fell >= 0.5 and gap <= 0.15 else "failed", first=bf16[1], final=bf16[30],
                   fell=round(fell, 4), gap_to_fp32=round(gap, 4))
    else:
        rec.update(status="skipped", why="bf16 or fp32 run missing (its own step says why)")
    records.append(rec)
    with open(os.path.join(work, "compare.jsonl"), "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
            print(json.dumps(r))


if __name__ == "__main__":
    main()
