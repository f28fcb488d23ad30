#!/usr/bin/env bash
# The whole test suite on a fresh machine: install dependencies, build, fetch the demo books and the
# GPT-2 tokenizer (cached under data/), prepare the token shards, run every test with CTest.
# usage: launch/run_tests.sh            (BUILD_DIR=build by default; extra args go to ctest)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
launch/install_deps.sh
launch/build.sh "$BUILD_DIR"
launch/fetch_corpus.sh data
launch/fetch_tokenizer.sh data
if [ ! -f data/books/train.tok ] || [ ! -f data/books/val.tok ]; then
  "$BUILD_DIR/bin/nats" prepare --data_dir=data --out_dir=data/books --tokenizer=gpt2
fi
cd "$BUILD_DIR"
ctest --output-on-failure -j2 "$@"
