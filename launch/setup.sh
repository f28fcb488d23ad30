#!/usr/bin/env bash
# Everything a fresh machine needs before training or testing: system packages, the build, the demo books and the
# GPT-2 tokenizer file (both cached under data/), and the token shards. Idempotent; reruns take seconds.
# usage: launch/setup.sh [BUILD_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${1:-build}
launch/install_deps.sh
launch/build.sh "$BUILD_DIR"
launch/fetch_corpus.sh data
launch/fetch_tokenizer.sh data
if [ ! -f data/books/train.tok ] || [ ! -f data/books/val.tok ]; then
  "$BUILD_DIR/bin/nats" prepare --data_dir=data --out_dir=data/books --tokenizer=gpt2
fi
