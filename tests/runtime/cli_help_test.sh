#!/usr/bin/env bash
# The edges of the `nats` front end (launch/):
#  1. `nats --help` / `-h` print the usage to stdout and exit 0; `nats` alone prints it to stderr and exits 2;
#  2. for every command of that usage, `nats <command> --help` and `-h` exit 0 with the help on stdout, and
#     every flag the usage line names for the command appears in the command's own help (so the two cannot
#     drift apart);
#  3. `--flag=value` and `--flag value` both work for one flag of each command (same output);
#  4. `nats --version` == `nats version`, with every field; cmake/GitDescribe.cmake gives `git describe` in a
#     checkout and "unknown" outside one (a tarball, also one unpacked inside another repository).
# usage: cli_help_test.sh NATS_BINARY SOURCE_DIR DATA_DIR CMAKE_COMMAND
set -uo pipefail
NATS=$(realpath "$1")
SRC=$2
DATA=$3
CMAKE=${4:-cmake}
WORK=$(mktemp -d /tmp/nats_cli_help.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
failures=0

fail() {
  echo "FAIL $*"
  failures=$((failures + 1))
}
ok() { echo "ok   $*"; }

# 1. Top-level usage.
"$NATS" --help >"$WORK/usage" 2>"$WORK/err"
rc=$?
if [ "$rc" -ne 0 ] || [ ! -s "$WORK/usage" ] || [ -s "$WORK/err" ]; then
  fail "nats --help: exit $rc (want 0) or help not on stdout"
else
  ok "nats --help"
fi
"$NATS" -h >"$WORK/usage_h" 2>/dev/null
cmp -s "$WORK/usage" "$WORK/usage_h" && ok "nats -h == nats --help" || fail "nats -h differs from nats --help"
"$NATS" >/dev/null 2>"$WORK/err"
rc=$?
[ "$rc" -eq 2 ] && grep -q "usage" "$WORK/err" && ok "nats alone: usage on stderr, exit 2" ||
  fail "nats alone: exit $rc (want 2) or no usage on stderr"

# 2. Every command of the usage (its lines between "commands:" and the blank line after them).
commands=$(awk '/^commands:/ { on = 1; next } on && /^$/ { exit } on { print $1 }' "$WORK/usage")
[ -n "$commands" ] || fail "no commands found in nats --help"
for cmd in $commands; do
  for spelling in --help -h; do
    "$NATS" "$cmd" "$spelling" >"$WORK/help_$cmd" 2>"$WORK/err"
    rc=$?
    if [ "$rc" -ne 0 ] || [ ! -s "$WORK/help_$cmd" ]; then
      fail "nats $cmd $spelling: exit $rc (want 0) or nothing on stdout: $(head -1 "$WORK/err")"
    fi
  done
  line=$(grep -E "^  $cmd " "$WORK/usage")
  missing=""
  for flag in $(grep -oE -- '--[a-z_]+' <<<"$line" | sort -u); do
    # Whole flag names: --resume must not be found inside --resume_from.
    grep -qE -- "${flag}([^a-z_]|\$)" "$WORK/help_$cmd" || missing="$missing $flag"
  done
  [ -z "$missing" ] && ok "nats $cmd --help: exit 0, documents every flag of its usage line" ||
    fail "nats $cmd --help does not document$missing (named in nats --help: '$line')"
done

# 3. `--flag=value` and `--flag value`. A tiny checkpoint first, trained with the `=` spelling (train's
#    `--flag value` spelling runs in every other test).
"$NATS" train --config="$SRC/configs/tiny.textproto" --set=model.n_layer=1 --set=model.d_model=32 \
  --set=model.n_head=2 --set=model.context_length=32 --set=train.steps=2 --set=train.eval_windows=1 \
  --set=train.threads=1 --set=data.train_path="$DATA/books/train.tok" --set=data.val_path="$DATA/books/val.tok" \
  --set=train.run_dir="$WORK/run" >"$WORK/train.log" 2>&1
rc=$?
[ "$rc" -eq 0 ] && [ -d "$WORK/run/ckpt" ] && grep -q "^summary: 2 steps" "$WORK/train.log" &&
  ok "train --config=FILE --set=A=B" || { fail "train --config=FILE --set=A=B: exit $rc"; tail -3 "$WORK/train.log"; }

# same_output NAME CMD_EQUALS CMD_SPACE: both exit 0 with the same, non-empty stdout.
same_output() {
  local name=$1 eq=$2 space=$3
  bash -c "$eq" >"$WORK/eq.out" 2>"$WORK/eq.err"
  local rc_eq=$?
  bash -c "$space" >"$WORK/space.out" 2>"$WORK/space.err"
  local rc_space=$?
  if [ "$rc_eq" -ne 0 ] || [ "$rc_space" -ne 0 ]; then
    fail "$name: exit $rc_eq / $rc_space (want 0): $(head -1 "$WORK/eq.err") $(head -1 "$WORK/space.err")"
  elif [ ! -s "$WORK/eq.out" ] || ! cmp -s "$WORK/eq.out" "$WORK/space.out"; then
    fail "$name: outputs differ or are empty"
    diff "$WORK/eq.out" "$WORK/space.out" | head -5
  else
    ok "$name"
  fi
}
N=$(printf '%q' "$NATS")
CKPT=$(printf '%q' "$WORK/run/ckpt")
same_output "eval --windows=1 / --windows 1" "$N eval --checkpoint=$CKPT --windows=1 --mode=forward" \
  "$N eval --checkpoint $CKPT --windows 1 --mode forward"
same_output "generate --max_tokens=3 / --max_tokens 3" \
  "$N generate --checkpoint=$CKPT --prompt='Call me Ishmael.' --max_tokens=3 --temperature=0 --threads=1" \
  "$N generate --checkpoint $CKPT --prompt 'Call me Ishmael.' --max_tokens 3 --temperature 0 --threads 1"
same_output "tokenize --tokenizer=byte / --tokenizer byte" "echo 'Call me Ishmael.' | $N tokenize --tokenizer=byte" \
  "echo 'Call me Ishmael.' | $N tokenize --tokenizer byte"
# inspect has switches only: the checkpoint may come before or after them.
same_output "inspect DIR --no_verify / --no_verify DIR" "$N inspect $CKPT --no_verify" "$N inspect --no_verify $CKPT"
same_output "version / --version" "$N version" "$N --version"
# prepare prints its timing, so compare what it writes: the shards of --out=DIR and --out DIR.
printf 'Call me Ishmael.\n' >"$WORK/doc.txt"
if "$NATS" prepare --input="$WORK/doc.txt" --tokenizer=byte --val_fraction=0 --out="$WORK/prep_eq" >/dev/null 2>&1 &&
   "$NATS" prepare --input "$WORK/doc.txt" --tokenizer byte --val_fraction 0 --out "$WORK/prep_space" >/dev/null 2>&1 &&
   diff -r "$WORK/prep_eq/train" "$WORK/prep_space/train" >/dev/null; then
  ok "prepare --out=DIR / --out DIR"
else
  fail "prepare --out=DIR / --out DIR: failed or wrote different shards"
fi
if "$NATS" plot "$WORK/run" --out="$WORK/plots_eq" >/dev/null 2>"$WORK/err" &&
   "$NATS" plot "$WORK/run" --out "$WORK/plots_space" >/dev/null 2>>"$WORK/err" &&
   [ -s "$WORK/plots_eq/loss.png" ] && [ -s "$WORK/plots_space/loss.png" ]; then
  ok "plot --out=DIR / --out DIR"
else
  fail "plot --out=DIR / --out DIR: $(head -2 "$WORK/err")"
fi
# A config without --checkpoint is the documented random initialisation (for timing), not an error.
"$NATS" generate --config "$SRC/configs/tiny.textproto" --set model.n_layer=1 \
  --prompt "Call me" --max_tokens 2 --threads 1 >/dev/null 2>"$WORK/err" && grep -q "random initialisation" "$WORK/err" &&
  ok "generate --config (random init)" || fail "generate --config: $(head -2 "$WORK/err")"

# 4. Version.
"$NATS" --version >"$WORK/version"
head -1 "$WORK/version" | grep -qE '^nats [^ ]+$' || fail "nats --version: first line is not 'nats <commit>'"
for field in "build type" LibTorch MPI NCCL CUDA compiler; do
  grep -q "^$field " "$WORK/version" || fail "nats --version does not report '$field'"
done
"$CMAKE" -DSOURCE_DIR="$SRC" -DOUTPUT="$WORK/checkout.h" -P "$SRC/cmake/GitDescribe.cmake"
want=unknown
if git -C "$SRC" rev-parse --show-toplevel >/dev/null 2>&1; then want=$(git -C "$SRC" describe --always --dirty); fi
grep -qF "\"$want\"" "$WORK/checkout.h" && ok "GitDescribe.cmake in the source tree: $want" ||
  fail "GitDescribe.cmake in the source tree: $(grep define "$WORK/checkout.h"), want $want"
mkdir -p "$WORK/tarball" "$WORK/repo/unpacked"
git -C "$WORK/repo" init -q 2>/dev/null
for dir in "$WORK/tarball" "$WORK/repo/unpacked"; do
  "$CMAKE" -DSOURCE_DIR="$dir" -DOUTPUT="$WORK/outside.h" -P "$SRC/cmake/GitDescribe.cmake"
  grep -qF '"unknown"' "$WORK/outside.h" && ok "GitDescribe.cmake outside a checkout ($dir): unknown" ||
    fail "GitDescribe.cmake in $dir: $(grep define "$WORK/outside.h"), want unknown"
done

[ "$failures" -eq 0 ] && echo "all passed" || echo "$failures failure(s)"
[ "$failures" -eq 0 ]
