#!/usr/bin/env bash
# CPU training speed, all from one run on one machine (issue 15's numbers): `nats train` tokens/s of the
# 6-layer d-384 and the configs/small (6-layer d-192) GPT-2-vocabulary models at T 1024, dense and NAtS, against
# the PyTorch eager peer (bench/pytorch_peer_train.py, the same dense model) at its best micro-batch (1, 2 or
# 4); the achieved GFLOP/s of each (dense-equivalent FLOPs, 6 N + 6 L T d per token) against a large sgemm
# measured in the same run; then bench/tile_gemm_bench (the fused kernel against sgemm at its tile shapes).
# Prints markdown tables (BENCHMARKS.md keeps them). Takes about 15 minutes on 2 cores.
# Ours links the OpenMP build of OpenBLAS where it is installed (CMakeLists.txt); the sgemm peak and the PyTorch
# peer get the same library (LD_LIBRARY_PATH), so that the ratios compare code, not BLAS builds.
# usage: bench/cpu_speed.sh [BUILD_DIR] [STEPS] [THREADS]
#        NATS_BEFORE=/path/to/older/nats bench/cpu_speed.sh ...   also times an older binary (a "before" column)
#        NATS_PTHREAD_BLAS=1 bench/cpu_speed.sh ...   also times ours on OpenBLAS's pthreads build
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${1:-build}; STEPS=${2:-6}; THREADS=${3:-2}
out=$(mktemp -d); trap 'rm -rf "$out"' EXIT
OPENMP_BLAS=/usr/lib/x86_64-linux-gnu/openblas-openmp PTHREAD_BLAS=/usr/lib/x86_64-linux-gnu/openblas-pthread
PEER_ENV=()
if [ -e "$OPENMP_BLAS/libblas.so.3" ]; then PEER_ENV=(env "LD_LIBRARY_PATH=$OPENMP_BLAS"); fi
# The sgemm peak, measured at the start and again at the end: this VM's speed swings between minutes, and a
# peak read in a slow moment would flatter every "of sgemm peak" below, so the higher of the two is used.
measure_peak() {
  "${PEER_ENV[@]}" /usr/bin/python3 - "$THREADS" <<'PY'
import sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
a @ b
best = 1e9
for _ in range(5):
    t = time.perf_counter(); a @ b; best = min(best, time.perf_counter() - t)
print(f"{2 * 2048 ** 3 / best / 1e9:.1f}")
PY
}
peak_start=$(measure_peak)
echo "sgemm 2048^3 peak at the start: $peak_start GFLOP/s ($THREADS threads)" >&2
ours() {  # NAME D ATTENTION [BINARY [LD_LIBRARY_PATH]]
  LD_LIBRARY_PATH="${5:-${LD_LIBRARY_PATH:-}}" "${4:-$BUILD_DIR/bin/nats}" train --config configs/small.textproto --set model.d_model="$2" \
    --set model.attention="$3" --set train.steps="$STEPS" --set train.eval_interval=0 --set train.eval_windows=1 \
    --set train.log_interval=1 --set train.threads="$THREADS" --set checkpoint.interval_steps=0 \
    --set train.run_dir="$out/$1" > "$out/$1.log"
}
for d in 192 384; do
  ours "d${d}_dense" "$d" DENSE
  ours "d${d}_nats" "$d" NATS
  if [ -n "${NATS_BEFORE:-}" ]; then
    ours "d${d}_dense_before" "$d" DENSE "$NATS_BEFORE"
    ours "d${d}_nats_before" "$d" NATS "$NATS_BEFORE"
  fi
  if [ -n "${NATS_PTHREAD_BLAS:-}" ]; then
    ours "d${d}_dense_pthread" "$d" DENSE "$BUILD_DIR/bin/nats" "$PTHREAD_BLAS"
    ours "d${d}_nats_pthread" "$d" NATS "$BUILD_DIR/bin/nats" "$PTHREAD_BLAS"
  fi
  for micro in 1 2 4; do
    "${PEER_ENV[@]}" /usr/bin/python3 bench/pytorch_peer_train.py --shard data/books/train.tok --layers 6 --d "$d" --heads 6 \
      --ctx 1024 --batch 8 --micro "$micro" --steps "$STEPS" --threads "$THREADS" > "$out/peer_d${d}_m${micro}.json"
  done
done
peak_end=$(measure_peak)
echo "sgemm 2048^3 peak at the end: $peak_end GFLOP/s" >&2
peak=$(/usr/bin/python3 -c "print(max($peak_start, $peak_end))")
/usr/bin/python3 - "$out" "$peak" "$THREADS" "$peak_start" "$peak_end" <<'PY'
import glob, json, sys
out, peak, threads = sys.argv[1], float(sys.argv[2]), sys.argv[3]
def ours(name):
    rows = [r for r in map(json.loads, open(f"{out}/{name}/metrics.jsonl")) if r.get("kind") == "train" and r["step"] > 2]
    return 8 * 1024 * len(rows) / sum(8 * 1024 / r["tokens_per_s"] for r in rows)
print("| model | implementation | tokens/s | vs PyTorch eager (best micro) | GFLOP/s (dense-equiv.) | of sgemm peak |")
print("|---|---|---|---|---|---|")
for d in (192, 384):
    peers = {m: json.load(open(f"{out}/peer_d{d}_m{m}.json")) for m in (1, 2, 4)}
    best_m = max(peers, key=lambda m: peers[m]["tokens_per_s"])
    peer = peers[best_m]
    n = peer["params"]
    fpt = 6 * n + 6 * 6 * 1024 * d
    runs = [("nats train, dense", f"d{d}_dense"), ("nats train, NAtS", f"d{d}_nats"),
            ("before (NATS_BEFORE), dense", f"d{d}_dense_before"), ("before (NATS_BEFORE), NAtS", f"d{d}_nats_before"),
            ("nats train, dense, pthreads OpenBLAS", f"d{d}_dense_pthread"),
            ("nats train, NAtS, pthreads OpenBLAS", f"d{d}_nats_pthread")]
    rows = [(label, ours(name)) for label, name in runs if glob.glob(f"{out}/{name}/metrics.jsonl")]
    for label, tok in rows + [(f"PyTorch {peer['torch']} eager, micro {best_m}", peer["tokens_per_s"])]:
        gf = tok * fpt / 1e9
        print(f"| 6L d{d} ({n / 1e6:.1f}M) | {label} | {tok:.0f} | {tok / peer['tokens_per_s']:.2f}x | {gf:.1f} | {100 * gf / peak:.0f}% |")
    print(f"| 6L d{d} | PyTorch eager by micro-batch | " + ", ".join(f"{m}: {peers[m]['tokens_per_s']:.0f}" for m in (1, 2, 4)) + " | | | |")
print(f"\nsgemm 2048^3 peak in the same run: {peak:.1f} GFLOP/s (the higher of {sys.argv[4]} at the start and {sys.argv[5]} at the end); {threads} threads; batch 8 x 1024 tokens, steps 3..N timed.")
PY
echo
"$BUILD_DIR/bench/tile_gemm_bench" --threads "$THREADS"
