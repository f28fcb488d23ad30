#!/usr/bin/env bash
# Lays out the .deb files from launch/gpu/fetch_debs.sh under PREFIX on the bare GPU machine (no network,
# no apt, no root): checks them against DEBDIR/MANIFEST, extracts each one (dpkg-deb -x, or ar + tar where
# dpkg-deb is missing), then fixes what assumes an install at /:
#   - absolute symlinks (zlib1g-dev's libz.so -> /lib/x86_64-linux-gnu/libz.so.1.2.13) point into PREFIX;
#   - pkg-config .pc files say prefix=/usr (and some libdir=/usr/...): rewritten to PREFIX/usr;
#   - OpenSSL's configuration.h/opensslconf.h sit in include/x86_64-linux-gnu/openssl, a folder the compiler
#     searches only under /usr: linked into PREFIX/usr/include/openssl next to the other headers.
# The CMake configs (absl, GTest, benchmark, nlohmann_json) locate themselves relative to their own file, and
# protobuf is found by CMake's FindProtobuf, so those need nothing. Finally writes PREFIX/env.sh (source it
# before cmake, ninja and ctest: protoc and the tests load libraries from PREFIX) and checks protoc and
# pkg-config with it. Rerunnable: extracting again overwrites the files and the fixes are reapplied.
#
# Usage: launch/gpu/unpack_debs.sh DEBDIR PREFIX
#   then: source PREFIX/env.sh && cmake -S . -B build $NATS_GPU_CMAKE_FLAGS ...
set -euo pipefail

if [ $# -ne 2 ]; then
  echo "usage: $0 DEBDIR PREFIX" >&2
  exit 2
fi
DEBDIR=$(cd "$1" && pwd)
mkdir -p "$2"
PREFIX=$(cd "$2" && pwd)
ARCH_LIB=$PREFIX/usr/lib/x86_64-linux-gnu

if [ -f "$DEBDIR/MANIFEST" ]; then
  # MANIFEST lines: package version sha256 file
  (cd "$DEBDIR" && awk '{print $3 "  " $4}' MANIFEST | sha256sum --check --quiet)
  mapfile -t debs < <(awk -v d="$DEBDIR" '{print d "/" $4}' "$DEBDIR/MANIFEST")
else
  echo "[unpack_debs] no MANIFEST in $DEBDIR: unpacking every .deb there unchecked"
  debs=("$DEBDIR"/*.deb)
fi

extract() {
  if command -v dpkg-deb >/dev/null; then
    dpkg-deb -x "$1" "$PREFIX"
    return
  fi
  local member
  member=$(ar t "$1" | grep '^data\.tar')
  case "$member" in
    *.xz) ar p "$1" "$member" | tar -xJ -C "$PREFIX" ;;
    *.zst) ar p "$1" "$member" | tar --zstd -x -C "$PREFIX" ;;
    *.gz) ar p "$1" "$member" | tar -xz -C "$PREFIX" ;;
    *) ar p "$1" "$member" | tar -x -C "$PREFIX" ;;
  esac
}
for deb in "${debs[@]}"; do
  extract "$deb"
done
echo "[unpack_debs] extracted ${#debs[@]} packages into $PREFIX"

# Absolute symlinks -> relative links to the same file under PREFIX (Debian ships /lib and /usr/lib alike).
find "$PREFIX" -type l -lname '/*' | while read -r link; do
  target=$(readlink "$link")
  if [ -e "$PREFIX$target" ]; then
    ln -sfnr "$PREFIX$target" "$link"
  elif [ -e "$PREFIX/usr$target" ]; then
    ln -sfnr "$PREFIX/usr$target" "$link"
  else
    echo "[unpack_debs] WARNING: ${link#"$PREFIX"} -> $target has no copy under PREFIX" >&2
  fi
done

# Links into packages not fetched (PCRE2 16/32-bit and POSIX, googletest sources, shared docs) would dangle.
find "$PREFIX" -xtype l -delete

# prefix=/usr, libdir=/usr/..., -I/usr/include -> PREFIX/usr (already rewritten lines no longer match).
find "$PREFIX" -name '*.pc' -exec sed -i -E "s#(^[A-Za-z_]+=|-I|-L)/usr(/|\$)#\1$PREFIX/usr\2#g" {} +

for h in "$PREFIX"/usr/include/x86_64-linux-gnu/openssl/*.h; do
  ln -sfnr "$h" "$PREFIX/usr/include/openssl/$(basename "$h")"
done

OPENBLAS_INCLUDE_DIR=$PREFIX/usr/include/x86_64-linux-gnu/openblas-pthread
OPENBLAS_LIBRARY=$ARCH_LIB/openblas-pthread/libopenblas.so
cat >"$PREFIX/env.sh" <<ENV
# Written by launch/gpu/unpack_debs.sh: the build dependencies unpacked under $PREFIX.
# Source before cmake, ninja and ctest; pass \$NATS_GPU_CMAKE_FLAGS to cmake.
if [ "\${NATS_GPU_PREFIX:-}" != "$PREFIX" ]; then
  export NATS_GPU_PREFIX="$PREFIX"
  export CMAKE_PREFIX_PATH="$PREFIX/usr\${CMAKE_PREFIX_PATH:+:\$CMAKE_PREFIX_PATH}"
  export PATH="$PREFIX/usr/bin:\$PATH"
  export LD_LIBRARY_PATH="$ARCH_LIB:$ARCH_LIB/openblas-pthread\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
  export PKG_CONFIG_PATH="$ARCH_LIB/pkgconfig:$PREFIX/usr/share/pkgconfig\${PKG_CONFIG_PATH:+:\$PKG_CONFIG_PATH}"
fi
export NATS_GPU_CMAKE_FLAGS="-DOPENBLAS_INCLUDE_DIR=$OPENBLAS_INCLUDE_DIR -DOPENBLAS_LIBRARY=$OPENBLAS_LIBRARY -DProtobuf_PROTOC_EXECUTABLE=$PREFIX/usr/bin/protoc -DOPENSSL_ROOT_DIR=$PREFIX/usr -DPKG_CONFIG_EXECUTABLE=$PREFIX/usr/bin/pkgconf"
ENV

# shellcheck source=/dev/null
source "$PREFIX/env.sh"
echo "[unpack_debs] $("$PREFIX/usr/bin/protoc" --version), pcre2 $("$PREFIX/usr/bin/pkgconf" --modversion libpcre2-8)"
echo "[unpack_debs] wrote $PREFIX/env.sh:"
cat "$PREFIX/env.sh"
