#!/usr/bin/env bash
# The sanitizer + fuzz stage: builds the libFuzzer targets of tests/fuzz/ and the parser unit tests with clang
# ASan + UBSan (NATS_FUZZ=ON) in build-fuzz/, runs them with CTest (unit tests, then every fuzz target once over
# its checked-in and generated corpus: earlier crashes stay fixed), then fuzzes each target for SECONDS seconds,
# two at a time (one per core). Fails on any sanitizer report, failed check, crash, leak, timeout or OOM; the
# input that did it lands in build-fuzz/fuzz_crashes/ (add it to tests/fuzz/corpus/<target>/ once fixed).
# usage: tests/fuzz/run_fuzz.sh [SECONDS_PER_TARGET (default 60)] [TARGET ...]   (BUILD_DIR=build-fuzz by default)
set -euo pipefail
cd "$(dirname "$0")/../.."
SECONDS_PER_TARGET=${1:-60}
shift || true
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then TARGETS=(token_shard corpus gpt2_tokenizer config checkpoint prepare_input); fi
BUILD_DIR=${BUILD_DIR:-build-fuzz}
JOBS=${JOBS:-2}
start=$(date +%s)
stamp() { echo "[run_fuzz $(( $(date +%s) - start ))s] $*"; }

launch/install_deps.sh --fuzz
launch/fetch_corpus.sh >/dev/null     # into the cache ($NATS_CACHE, else .cache)
launch/fetch_tokenizer.sh >/dev/null

stamp "configure + build ($BUILD_DIR, clang, ASan + UBSan + libFuzzer)"
CC=clang CXX=clang++ cmake -S . -B "$BUILD_DIR" -G Ninja -DNATS_FUZZ=ON >/dev/null
cmake --build "$BUILD_DIR" -j"$JOBS" --target nats_fuzz_all

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:allocator_may_return_null=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
stamp "unit tests under ASan + UBSan, and every fuzz target over its corpus"
(cd "$BUILD_DIR" && ctest --output-on-failure -j"$JOBS")

stamp "fuzzing ${TARGETS[*]} for ${SECONDS_PER_TARGET}s each, $JOBS at a time"
work="$BUILD_DIR/fuzz_work"
crashes="$BUILD_DIR/fuzz_crashes"
mkdir -p "$work" "$crashes"
export NATS_DATA_DIR=$PWD/data
pids=()
names=()
failed=()
wait_one() {  # waits for the oldest running target and prints its verdict
  local pid=${pids[0]} name=${names[0]} verdict=ok
  pids=("${pids[@]:1}")
  names=("${names[@]:1}")
  if ! wait "$pid"; then
    failed+=("$name")
    verdict="FAILED (log: $work/$name.log)"
  fi
  local log="$work/$name.log" runs cov
  runs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | awk '{print $2}' | tail -1 || true)
  cov=$(grep -o 'cov: [0-9]*' "$log" | awk '{print $2}' | tail -1 || true)
  echo "  $name: ${runs:-?} executions, ${cov:-?} coverage edges: $verdict"
}
for name in "${TARGETS[@]}"; do
  while [ ${#pids[@]} -ge "$JOBS" ]; do wait_one; done
  mkdir -p "$work/$name" "tests/fuzz/corpus/$name"
  # New inputs go to the first (scratch) directory; the checked-in and generated corpora are only read.
  "$BUILD_DIR/tests/fuzz/${name}_fuzz" "$work/$name" "tests/fuzz/corpus/$name" "$BUILD_DIR/fuzz_seeds/$name" \
    -max_total_time="$SECONDS_PER_TARGET" -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$crashes/$name-" >"$work/$name.log" 2>&1 &
  pids+=($!)
  names+=("$name")
done
while [ ${#pids[@]} -gt 0 ]; do wait_one; done

if [ ${#failed[@]} -gt 0 ]; then
  for name in "${failed[@]}"; do
    echo "---- $name ($work/$name.log, last lines)"
    tail -40 "$work/$name.log"
  done
  stamp "FAILED: ${failed[*]}; reproduce with $BUILD_DIR/tests/fuzz/<target>_fuzz $crashes/<file>"
  exit 1
fi
stamp "passed"
