#!/usr/bin/env bash
# Fails when a tracked C++ source is not formatted as .clang-format says (clang-format 14, Debian's). CI runs it
# on every tracked .cpp/.h/.cu file, not only on changed ones: the whole tree was formatted once, so any file
# that drifts is one a change touched. Fix with: launch/check_format.sh --fix   (rewrites the files in place)
# usage: launch/check_format.sh [--fix] [FILES...]   (default: every tracked C++ file)
set -euo pipefail
cd "$(dirname "$0")/.."
fix=0
if [ "${1:-}" = "--fix" ]; then fix=1; shift; fi
command -v clang-format >/dev/null || { echo "check_format: clang-format is not installed (apt-get install clang-format)"; exit 2; }
if [ $# -gt 0 ]; then files=("$@"); else mapfile -t files < <(git ls-files '*.cpp' '*.h' '*.cu' '*.cuh'); fi
if [ "$fix" = 1 ]; then clang-format -i "${files[@]}"; exit 0; fi
bad=()
for f in "${files[@]}"; do clang-format --dry-run -Werror "$f" >/dev/null 2>&1 || bad+=("$f"); done
if [ ${#bad[@]} -gt 0 ]; then
  echo "check_format: ${#bad[@]} file(s) differ from .clang-format:"
  printf '  %s\n' "${bad[@]}"
  echo "fix with: launch/check_format.sh --fix ${bad[*]}"
  exit 1
fi
echo "check_format: ${#files[@]} files formatted as .clang-format says"
