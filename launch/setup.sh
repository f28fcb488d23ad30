#!/usr/bin/env bash
# Everything a fresh machine needs before training or testing: system packages, the build, the demo books and the
# GPT-2 tokenizer file (both downloaded into the cache: $NATS_CACHE, else .cache/), and the token shards
# (data/books/). Idempotent; reruns take seconds.
# usage: launch/setup.sh [BUILD_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${1:-build}
CACHE=${NATS_CACHE:-$PWD/.cache}
launch/install_deps.sh
launch/build.sh "$BUILD_DIR"
# Checkouts from before the cache kept the downloads under data/: move them once instead of fetching again.
for part in books/raw tokenizer debs npm; do
  if [ -d "data/$part" ] && [ ! -e "$CACHE/$part" ]; then
    mkdir -p "$(dirname "$CACHE/$part")"
    mv "data/$part" "$CACHE/$part"
    echo "[setup] moved data/$part to $CACHE/$part (downloads now live in the cache)"
  fi
done
launch/fetch_corpus.sh "$CACHE"
launch/fetch_tokenizer.sh "$CACHE"
if [ ! -f data/books/train.tok ] || [ ! -f data/books/val.tok ]; then
  "$BUILD_DIR/bin/nats" prepare --cache_dir "$CACHE" --out_dir data/books --tokenizer gpt2
fi
# The byte-level shards of the same books (configs/*_byte, the post-training and passkey tests).
if [ ! -f data/books_byte/train.tok ] || [ ! -f data/books_byte/val.tok ]; then
  "$BUILD_DIR/bin/nats" prepare --cache_dir "$CACHE" --out_dir data/books_byte --tokenizer byte
fi
