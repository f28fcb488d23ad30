#!/usr/bin/env bash
# The main job on a fresh machine: install dependencies, build, fetch and prepare the demo books,
# train configs/tiny.textproto (about a minute on 2 cores), evaluate it, print a summary.
# usage: launch/demo.sh [extra `nats train` flags, e.g. --set train.steps=400]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
launch/setup.sh "$BUILD_DIR"
mkdir -p runs
# A rerun starts runs/tiny over (--overwrite: `nats train` refuses a run_dir that holds a run) unless the flags
# ask to continue it.
fresh=(--overwrite)
for arg in "$@"; do case $arg in --resume*) fresh=() ;; esac; done
"$BUILD_DIR/bin/nats" train --config configs/tiny.textproto "${fresh[@]}" "$@" | tee runs/tiny.log
# Held-out books: perplexity by full forward and by token-by-token decoding, for each KV-cache policy.
"$BUILD_DIR/bin/nats" eval --checkpoint runs/tiny/ckpt --windows 8 --policy all | tee -a runs/tiny.log
