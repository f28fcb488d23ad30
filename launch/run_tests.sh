#!/usr/bin/env bash
# The whole test suite on a fresh machine: install dependencies, build, fetch the demo books and the
# GPT-2 tokenizer (cached under data/), prepare the token shards, run every test with CTest.
# usage: launch/run_tests.sh            (BUILD_DIR=build by default; extra args go to ctest)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
launch/setup.sh "$BUILD_DIR"
cd "$BUILD_DIR"
ctest --output-on-failure -j2 "$@"
