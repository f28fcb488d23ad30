#!/usr/bin/env bash
# Downloads (apt-get download: no install, no root needed) the Debian 12 .deb files of the C++ build
# dependencies that the bare GPU machine lacks, so that launch/gpu/unpack_debs.sh can lay them out there
# without network or apt. The list is what CMakeLists.txt finds (absl, protobuf + protoc, GTest/GMock,
# benchmark, PCRE2 via pkg-config, zlib, nlohmann_json, OpenBLAS, OpenSSL) plus the runtime libraries those
# link against, by `apt-cache depends`. Left out on purpose: libc6, libstdc++6, libgcc-s1, gcc-12-base (the
# GPU machine has its own, newer ones; older copies on LD_LIBRARY_PATH would shadow them), googletest (GTest
# sources, not needed with the prebuilt libgtest.a), the libopenblas-dev/libopenblas0 metapackages (no
# files), and the PCRE2 16/32-bit and POSIX libraries (libpcre2-8.pc needs none of them).
# Writes DIR/MANIFEST (package version sha256 file, one .deb a line) and prints the total size.
# Idempotent: a .deb already in DIR with the archive's SHA-256 is not fetched again; .deb files of other
# packages or versions are removed, so DIR always holds exactly one consistent set.
#
# Usage: launch/gpu/fetch_debs.sh [DIR]   (default: .gpu_debs in the repository)
set -euo pipefail

if [ $# -gt 1 ]; then
  echo "usage: $0 [DIR]" >&2
  exit 2
fi
DIR=${1:-$(cd "$(dirname "$0")/../.." && pwd)/.gpu_debs}
mkdir -p "$DIR"
cd "$DIR"

PACKAGES=(
  libabsl-dev libabsl20220623
  libprotobuf-dev libprotobuf32 libprotobuf-lite32 libprotoc32 protobuf-compiler
  libgtest-dev libgmock-dev
  libbenchmark-dev libbenchmark1debian
  libpcre2-dev libpcre2-8-0
  zlib1g-dev zlib1g
  nlohmann-json3-dev
  libopenblas-pthread-dev libopenblas0-pthread libgfortran5 libquadmath0
  libssl-dev libssl3
  pkgconf pkgconf-bin libpkgconf3
)

# As root, apt's download sandbox user (_apt) may not be able to write into DIR; download as root then.
APT_OPTS=(-q)
if [ "$(id -u)" -eq 0 ]; then APT_OPTS+=(-o APT::Sandbox::User=root); fi

# One line per package: 'URI' FILE SIZE SHA256:HEX. Asked from an empty folder, since apt prints nothing
# for a file already in the current one. Needs `apt-get update` once on a fresh machine.
print_uris() { (cd "$(mktemp -d)" && apt-get "${APT_OPTS[@]}" download --print-uris "${PACKAGES[@]}" && rmdir "$PWD"); }
if ! uris=$(print_uris 2>/dev/null); then
  echo "[fetch_debs] package lists missing or stale: apt-get update"
  apt-get -qq update
  uris=$(print_uris)
fi

wanted=()
missing=()
while read -r _uri file _size hash; do
  wanted+=("$file")
  if [ ! -f "$file" ] || [ "$(sha256sum "$file" | cut -d' ' -f1)" != "${hash#SHA256:}" ]; then
    rm -f "$file"
    missing+=("${file%%_*}") # Debian file names are PACKAGE_VERSION_ARCH.deb
  fi
done <<<"$uris"

if [ ${#missing[@]} -gt 0 ]; then
  echo "[fetch_debs] downloading ${#missing[@]} package(s) into $DIR"
  apt-get "${APT_OPTS[@]}" download "${missing[@]}"
fi

# Drop anything not in the current set (older versions after a security update, removed packages).
for f in *.deb; do
  case " ${wanted[*]} " in *" $f "*) ;; *) echo "[fetch_debs] removing stale $f"; rm -f "$f" ;; esac
done

: >MANIFEST.tmp
for f in "${wanted[@]}"; do
  printf '%s %s %s %s\n' "$(dpkg-deb -f "$f" Package)" "$(dpkg-deb -f "$f" Version)" \
    "$(sha256sum "$f" | cut -d' ' -f1)" "$f" >>MANIFEST.tmp
done
mv MANIFEST.tmp MANIFEST
total=$(du -cb "${wanted[@]}" | tail -1 | cut -f1)
echo "[fetch_debs] ${#wanted[@]} packages, $((total / 1024 / 1024)) MiB ($total bytes) in $DIR (see MANIFEST)"
