#!/usr/bin/env bash
# Installs every system dependency of the project from Debian's archive (idempotent).
# Returns in well under a second when everything is already present, so the README
# commands and .ci/run can always call it first.
# usage: launch/install_deps.sh [--fuzz]   (--fuzz: also clang + libFuzzer for tests/fuzz/run_fuzz.sh)
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git clang-format
  libtorch-dev libopenblas0-pthread libopenblas0-openmp libopenblas-dev
  libopenmpi-dev openmpi-bin
  libabsl-dev libprotobuf-dev protobuf-compiler
  libgtest-dev libgmock-dev libbenchmark-dev
  libpcre2-dev zlib1g-dev nlohmann-json3-dev libssl-dev
  nodejs npm python3-torch python3-protobuf python3-matplotlib
)
if [ "${1:-}" = "--fuzz" ]; then
  # The sanitizer + fuzz stage (tests/fuzz/run_fuzz.sh): clang 14 with its ASan/UBSan/libFuzzer runtimes.
  PACKAGES+=(clang libfuzzer-14-dev)
fi

missing=()
for p in "${PACKAGES[@]}"; do
  # nodejs/npm may come from another origin (nodesource bundles npm): accept any installed binary.
  case "$p" in
    nodejs) command -v node >/dev/null 2>&1 && continue ;;
    npm) command -v npm >/dev/null 2>&1 && continue ;;
  esac
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "[install_deps] installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "[install_deps] done"
