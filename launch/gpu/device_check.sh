#!/usr/bin/env bash
# One visit to a GPU machine verifies the GPU path (issue: "Train on GPUs"). On a bare machine with nvcc, CMake,
# ninja, g++ and a pip torch with CUDA (no network, no apt), it:
#   1. unpacks the Debian .debs fetched by launch/gpu/fetch_debs.sh (Abseil, protobuf, GoogleTest, ...) into a
#      prefix (launch/gpu/unpack_debs.sh);
#   2. configures against the pip torch's LibTorch without MPI, and builds only what the checks need, on every
#      core (build-gpu/; kept between calls on a warm machine, so a rerun only rebuilds what changed);
#   3. runs the GPU tests: the CUDA NAtS kernels against their host run and the CPU reference (fp32, bf16,
#      T up to 8k, GQA), device placement, the LM-head loss;
#   4. trains the tiny NAtS config on CUDA and on CPU from the same seed (loss curves compared), in bf16, and
#      saves on the GPU then resumes on the CPU and on the GPU;
#   5. measures: gpt2_124m bf16 tokens/s and MFU (ours and the PyTorch peer, eager and torch.compile, SDPA),
#      NAtS attention fwd+bwd against SDPA at T 4k/16k/32k.
# Every step is time-boxed; the whole run stays under 8 minutes (steps past the deadline are recorded as
# skipped). Writes OUT/summary.json (one entry per step: status, seconds, numbers) and OUT/logs/*.log.
# usage: launch/gpu/device_check.sh OUT [--quick]    (--quick: build and tests only)
# Rehearsal without a GPU: NATS_CHECK_CPU=1 launch/gpu/device_check.sh /tmp/out (uses Debian's LibTorch and
# the system libraries; the CUDA steps report "skipped: no GPU").
set -uo pipefail
cd "$(dirname "$0")/../.."
SRC=$(pwd)
OUT=$(realpath -m "${1:?usage: device_check.sh OUT [--quick]}")
QUICK=${2:-}
mkdir -p "$OUT/logs"
START=$(date +%s)
DEADLINE=$((START + ${NATS_CHECK_SECONDS:-450}))
JOBS=$(nproc)
BUILD=${NATS_GPU_BUILD:-$SRC/build-gpu}
WORK=${NATS_GPU_WORK:-/tmp/nats_gpu_check}
mkdir -p "$WORK"
RESULTS="$OUT/results.jsonl"
: >"$RESULTS"

# record NAME STATUS SECONDS [JSON_FIELDS]: one line of the summary.
record() {
  printf '{"step":"%s","status":"%s","seconds":%s%s}\n' "$1" "$2" "$3" "${4:+,$4}" >>"$RESULTS"
  printf '%-28s %-8s %5ss %s\n' "$1" "$2" "$3" "${4:-}"
}

# step NAME LIMIT_SECONDS COMMAND...: runs COMMAND with a timeout into OUT/logs/NAME.log, records the outcome.
step() {
  local name=$1 limit=$2
  shift 2
  local now left
  now=$(date +%s)
  left=$((DEADLINE - now))
  if [ "$left" -lt 10 ]; then
    record "$name" skipped 0 '"why":"deadline"'
    return 1
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  local t0=$SECONDS
  timeout "$limit" "$@" >"$OUT/logs/$name.log" 2>&1
  local rc=$?
  local dt=$((SECONDS - t0))
  if [ $rc -eq 0 ]; then
    record "$name" ok "$dt"
  elif [ $rc -eq 77 ]; then
    record "$name" skipped "$dt" "\"why\":$(tail -c 200 "$OUT/logs/$name.log" | python3 -c 'import json,sys;print(json.dumps(sys.stdin.read()))')"
  elif [ $rc -eq 124 ]; then
    record "$name" timeout "$dt" "\"limit_s\":$limit"
  else
    record "$name" failed "$dt" "\"rc\":$rc,\"tail\":$(tail -c 600 "$OUT/logs/$name.log" | python3 -c 'import json,sys;print(json.dumps(sys.stdin.read()))')"
  fi
  return $rc
}

# --- 0. The machine.
{
  nvidia-smi 2>&1 || echo "no nvidia-smi"
  python3 -c 'import torch;print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())'
  nvcc --version 2>&1 | tail -2
  cmake --version | head -1
  nproc
} >"$OUT/logs/machine.log" 2>&1
HAVE_GPU=0
if [ -z "${NATS_CHECK_CPU:-}" ] && python3 -c 'import torch,sys;sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  HAVE_GPU=1
fi
record machine ok 0 "\"gpu\":$HAVE_GPU"

# --- 1. Dependencies from the fetched .debs (not needed in the CPU rehearsal: the system has them).
CMAKE_EXTRA=()
if [ -z "${NATS_CHECK_CPU:-}" ]; then
  PREFIX=$WORK/prefix
  step unpack_debs 60 launch/gpu/unpack_debs.sh "$SRC/.gpu_debs" "$PREFIX" || { echo "see $OUT/logs/unpack_debs.log"; }
  # shellcheck disable=SC1091
  [ -f "$PREFIX/env.sh" ] && source "$PREFIX/env.sh"
  TORCH_PREFIX=$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)')
  CMAKE_EXTRA=(-DCMAKE_PREFIX_PATH="$TORCH_PREFIX;$PREFIX/usr" ${NATS_GPU_CMAKE_FLAGS:-})
  # NCCL: pip's nvidia-nccl wheel ships libnccl.so.2 and nccl.h but no unversioned libnccl.so for find_library.
  NCCL_DIR=$(python3 -c 'import nvidia.nccl, os; print(list(nvidia.nccl.__path__)[0])' 2>/dev/null || true)
  if [ -n "$NCCL_DIR" ] && [ -f "$NCCL_DIR/lib/libnccl.so.2" ] && [ -f "$NCCL_DIR/include/nccl.h" ]; then
    CMAKE_EXTRA+=(-DNCCL_LIB="$NCCL_DIR/lib/libnccl.so.2" -DNCCL_INCLUDE_DIR="$NCCL_DIR/include")
  fi
fi

# --- 2. Configure and build what the checks need.
step configure 180 cmake -S "$SRC" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DNATS_WITH_MPI=OFF \
  -DNATS_BUILD_BENCH=ON "${CMAKE_EXTRA[@]}" || true
grep -E "CUDA kernels|MPI communicator|NCCL communicator|Found Torch" "$OUT/logs/configure.log" | sed 's/^/  /'
TARGETS=(nats nats_rowwise_attention_test runtime_device_placement_test nats_linear_cross_entropy_test
         gpu_attention_bench)
[ -f "$BUILD/build.ninja" ] && grep -q "nats_rowwise_gpu_check:" "$BUILD/build.ninja" && TARGETS+=(nats_rowwise_gpu_check)
# -k 0: every compile error in one pass (one visit to the machine should show them all).
step build "${NATS_BUILD_SECONDS:-300}" cmake --build "$BUILD" -j "$JOBS" --target "${TARGETS[@]}" -- -k 0 || true
NATS=$BUILD/bin/nats
TESTS=$BUILD/tests/nats
[ -x "$NATS" ] || NATS=$(find "$BUILD" -name nats -type f -perm -u+x | head -1)
finish() {
  python3 "$SRC/launch/gpu/summarize.py" "$RESULTS" "$OUT/summary.json" "$WORK" "$OUT/logs"
  echo "summary: $OUT/summary.json ($(($(date +%s) - START)) s)"
  exit 0
}
if [ ! -x "$NATS" ]; then
  record nats_binary failed 0 '"why":"the build made no nats binary; see logs/configure.log and logs/build.log"'
  finish
fi

# --- 3. GPU tests (gtest prints which ran and which were skipped, and why).
[ -x "$BUILD/tests/nats/nats_rowwise_gpu_check" ] &&
  step cuda_kernels_raw 60 "$BUILD/tests/nats/nats_rowwise_gpu_check" 1000 64
for t in nats_rowwise_attention_test runtime_device_placement_test nats_linear_cross_entropy_test; do
  bin=$(find "$BUILD/tests" -name "$t" -type f | head -1)
  [ -n "$bin" ] && step "$t" 150 "$bin" --gtest_brief=0
done
grep -hE "^\[  (SKIPPED|FAILED) " "$OUT"/logs/*_test.log 2>/dev/null | sort -u | head -20 | sed 's/^/  /'
[ "$QUICK" = "--quick" ] && finish

# --- 4. Training runs: CUDA vs CPU, bf16, save on GPU -> resume on CPU and GPU.
# A byte-level corpus from the tree's own text (the machine has no network and no corpus): about 1.5 MB.
step corpus 60 "$NATS" prepare --input "$SRC/docs/*.md" --input "$SRC/*.md" --input "$SRC/nats/*.cpp" \
  --input "$SRC/runtime/*.cpp" --input "$SRC/parallel/*.cpp" --input "$SRC/data/*.cpp" --input "$SRC/launch/*.cpp" \
  --format text --tokenizer byte --out "$WORK/corpus" --overwrite
DEV=CUDA
[ $HAVE_GPU -eq 1 ] || DEV=CPU
common=(--config "$SRC/configs/tiny_nats.textproto" --set model.vocab_size=257 --set train.steps=30
        --set train.log_interval=1 --set train.eval_interval=0 --set train.eval_windows=1
        --set data.train_path="$WORK/corpus/train" --set data.val_path="$WORK/corpus/val" --set data.tokenizer=byte
        --set nats.lambda=0.01)
rm -rf "$WORK"/run_*
step train_cpu 120 "$NATS" train "${common[@]}" --set train.device=CPU --set train.run_dir="$WORK/run_cpu"
step train_cuda 120 "$NATS" train "${common[@]}" --set train.device=$DEV --set train.run_dir="$WORK/run_cuda"
[ $HAVE_GPU -eq 1 ] && step train_cuda_bf16 120 "$NATS" train "${common[@]}" --set train.device=$DEV --set train.precision=BF16 \
  --set train.run_dir="$WORK/run_bf16"
# NCCL at world size 1 (no MPI: a local communicator shares the unique id): every collective the trainer uses.
[ $HAVE_GPU -eq 1 ] && step train_cuda_nccl 120 "$NATS" train "${common[@]}" --set train.device=CUDA \
  --set parallel.backend=NCCL --set train.run_dir="$WORK/run_nccl"
ckpt=(--set checkpoint.interval_steps=20 --set checkpoint.keep_last=2)
step train_cuda_to_20 120 "$NATS" train "${common[@]}" "${ckpt[@]}" --set train.steps=20 --set train.device=$DEV \
  --set train.run_dir="$WORK/run_resume_cpu"
cp -r "$WORK/run_resume_cpu" "$WORK/run_resume_cuda" 2>/dev/null
step resume_on_cpu 120 "$NATS" train "${common[@]}" "${ckpt[@]}" --set train.device=CPU \
  --set train.run_dir="$WORK/run_resume_cpu" --resume
step resume_on_cuda 120 "$NATS" train "${common[@]}" "${ckpt[@]}" --set train.device=$DEV \
  --set train.run_dir="$WORK/run_resume_cuda" --resume
python3 "$SRC/launch/gpu/compare_runs.py" "$WORK" >"$OUT/logs/compare_runs.log" 2>&1
cat "$OUT/logs/compare_runs.log" | sed 's/^/  /'
cat "$WORK/compare.jsonl" >>"$RESULTS" 2>/dev/null

# --- 5. Numbers (GPU only).
if [ $HAVE_GPU -eq 1 ]; then
  gpt2=(--config "$SRC/configs/gpt2_124m.textproto" --set train.steps=12 --set train.batch_size=16
        --set train.micro_batch_size=16 --set train.log_interval=2 --set train.eval_interval=0
        --set train.eval_windows=1 --set checkpoint.interval_steps=0 --set train.device=CUDA
        --set train.precision=BF16 --set train.peak_gflops=989000
        --set data.train_path="$WORK/corpus/train" --set data.val_path="$WORK/corpus/val"
        --set data.tokenizer=byte)
  step gpt2_124m_ours 150 "$NATS" train "${gpt2[@]}" --set train.run_dir="$WORK/run_gpt2"
  peer=(--synthetic --device cuda --dtype bf16 --attention sdpa --layers 12 --d 768 --heads 12 --ctx 1024
        --batch 16 --micro 16 --vocab 50304 --steps 10)
  step gpt2_124m_torch_eager 120 python3 "$SRC/bench/pytorch_peer_train.py" "${peer[@]}"
  step gpt2_124m_torch_compile 200 python3 "$SRC/bench/pytorch_peer_train.py" "${peer[@]}" --compile
  bench=$(find "$BUILD" -name gpu_attention_bench -type f | head -1)
  [ -n "$bench" ] && step nats_vs_sdpa 150 "$bench" --lengths 4096,16384,32768
fi
finish
