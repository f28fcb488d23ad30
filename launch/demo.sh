#!/usr/bin/env bash
# The main job on a fresh machine: install dependencies, build, fetch and prepare the demo books,
# train configs/tiny.textproto (about a minute on 2 cores), evaluate it, print a summary.
# usage: launch/demo.sh [extra `nats train` flags, e.g. --set train.steps=400]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
launch/setup.sh "$BUILD_DIR"
mkdir -p runs
"$BUILD_DIR/bin/nats" train --config configs/tiny.textproto "$@" | tee runs/tiny.log
# Held-out books: perplexity by full forward and by token-by-token decoding, for each KV-cache policy.
"$BUILD_DIR/bin/nats" eval --checkpoint runs/tiny/ckpt --windows 8 --policy all | tee -a runs/tiny.log
