#!/usr/bin/env bash
# launch/fetch_corpus.sh [CACHE_DIR]   (default: $NATS_CACHE, else .cache in the repository)
#
# Fetches the demo corpus (a "small PG-19": whole public-domain books that happen to ship inside small Debian
# packages, see shared/reference/data-sources.md) and copies each book, still raw, to CACHE_DIR/books/raw/<name>.txt.
# Jane Austen's six novels come as one R lazy-load database, copied as books/raw/austen.rdb (data/corpus.cpp
# decodes it; R itself is not needed).
# Cleaning (BOM, CRLF, Latin-1, Gutenberg boilerplate) is done in C++ by data/corpus.cpp, so this script only moves
# bytes. The .deb files are cached under CACHE_DIR/debs/, so a rerun is offline. `apt-get download` skips the
# packages' dependencies (which would pull in R or Go) and needs no root for installing anything.
set -euo pipefail

if [[ $# -gt 1 ]]; then
  echo "usage: $0 [CACHE_DIR]   (default: \$NATS_CACHE, else .cache in the repository)" >&2
  exit 2
fi
data_dir=${1:-${NATS_CACHE:-$(cd "$(dirname "$0")/.." && pwd)/.cache}}
deb_dir=$data_dir/debs
raw_dir=$data_dir/books/raw
mkdir -p "$deb_dir" "$raw_dir"
deb_dir=$(cd "$deb_dir" && pwd)
raw_dir=$(cd "$raw_dir" && pwd)

# file under books/raw|package|path inside the package
books=(
  "mobydick.txt|golang-github-colinmarc-hdfs-dev|usr/share/gocode/src/github.com/colinmarc/hdfs/testdata/mobydick.txt"
  "poe.txt|liblingua-stem-perl|usr/share/doc/liblingua-stem-perl/examples/collected_works_poe.txt"
  "huckfinn.txt|liblingua-stem-perl|usr/share/doc/liblingua-stem-perl/examples/huckfinn.txt"
  "sherlock.txt|golang-github-pierrec-lz4-dev|usr/share/gocode/src/github.com/pierrec/lz4/testdata/pg1661.txt"
  "tomsawyer.txt|golang-github-pierrec-lz4-dev|usr/share/gocode/src/github.com/pierrec/lz4/testdata/Mark.Twain-Tom.Sawyer.txt"
  "opticks.txt|golang-github-andybalholm-brotli-dev|usr/share/gocode/src/github.com/andybalholm/brotli/testdata/Isaac.Newton-Opticks.txt"
  "kjv.txt|widemargin|usr/share/widemargin/kjv.rawtxt"
  "austen.rdb|r-cran-janeaustenr|usr/lib/R/site-library/janeaustenr/data/Rdata.rdb"
)

cached_deb() {  # prints the cached .deb of package $1, or nothing
  compgen -G "$deb_dir/${1}_*_all.deb" | head -n 1 || true
}

# Download only the packages that are not cached yet; refresh the package lists only when a download fails
# (stale lists are the usual cause), so a normal run does not touch the network beyond the .debs.
missing=()
for entry in "${books[@]}"; do
  IFS='|' read -r _ pkg _ <<<"$entry"
  if [[ -z "$(cached_deb "$pkg")" ]] && [[ ! " ${missing[*]-} " == *" $pkg "* ]]; then
    missing+=("$pkg")
  fi
done
if [[ ${#missing[@]} -gt 0 ]]; then
  # apt-get download writes into the current directory. As root it warns that user _apt cannot write there;
  # harmless, so that one warning line is filtered out.
  if ! (cd "$deb_dir" && apt-get download "${missing[@]}" 2> >(grep -v 'unsandboxed' >&2)); then
    echo "apt-get download failed; running apt-get update and retrying" >&2
    apt-get update -qq
    (cd "$deb_dir" && apt-get download "${missing[@]}" 2> >(grep -v 'unsandboxed' >&2))
  fi
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

for entry in "${books[@]}"; do
  IFS='|' read -r name pkg path <<<"$entry"
  deb=$(cached_deb "$pkg")
  if [[ -z "$deb" ]]; then
    echo "error: no cached .deb for package $pkg in $deb_dir" >&2
    exit 1
  fi
  if [[ ! -d "$tmp/$pkg" ]]; then
    mkdir -p "$tmp/$pkg"
    dpkg-deb -x "$deb" "$tmp/$pkg"
  fi
  if [[ ! -f "$tmp/$pkg/$path" ]]; then
    echo "error: $deb does not contain /$path (package version changed?)" >&2
    exit 1
  fi
  # Write under a temp name, then rename, so an interrupted run never leaves a half-copied book.
  cp "$tmp/$pkg/$path" "$raw_dir/.$name.tmp"
  mv -f "$raw_dir/.$name.tmp" "$raw_dir/$name"
  printf '%-14s %9d bytes  %s  (%s)\n' "$name" "$(stat -c %s "$raw_dir/$name")" "$raw_dir/$name" \
    "$(basename "$deb")"
done
