#!/usr/bin/env bash
# Configure and build everything (Release, Ninja, ccache when present). usage: launch/build.sh [BUILD_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${1:-build}
if [ ! -f "$BUILD_DIR/build.ninja" ]; then
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release
fi
# -j2: each LibTorch translation unit needs ~1-2 GB and 15-30 s; more jobs than cores only thrash.
cmake --build "$BUILD_DIR" -j "${NATS_BUILD_JOBS:-2}"
