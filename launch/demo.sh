#!/usr/bin/env bash
# The main job on a fresh machine: install dependencies, build, fetch and prepare the demo books,
# train configs/tiny.textproto (about a minute on 2 cores), evaluate it, print a summary.
# usage: launch/demo.sh [extra `nats train` flags, e.g. --set train.steps=400]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
launch/install_deps.sh
launch/build.sh "$BUILD_DIR"
launch/fetch_corpus.sh data
launch/fetch_tokenizer.sh data
if [ ! -f data/books/train.tok ] || [ ! -f data/books/val.tok ]; then
  "$BUILD_DIR/bin/nats" prepare --data_dir=data --out_dir=data/books --tokenizer=gpt2
fi
mkdir -p runs
"$BUILD_DIR/bin/nats" train --config configs/tiny.textproto "$@" | tee runs/tiny.log
