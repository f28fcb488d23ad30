#!/usr/bin/env bash
# A save that runs out of disk space (`nats train`, tiny dense model, a checkpoint every 2 steps):
#  1. injected ENOSPC halfway through a blob (NATS_FAULT_ENOSPC_AFTER_BYTES), checkpoint.on_save_error STOP:
#     exit 1 with a message naming the blob, "No space left on device" and the bytes the checkpoint needs;
#     no partial save left, the previous checkpoint verifies with `nats inspect`, and --resume finishes the run;
#  2. the same with on_save_error CONTINUE: the failed save is logged ("checkpoint_error"), training goes on,
#     the next interval saves again, exit 0;
#  3. a real full file system (a tmpfs, when this user may mount one; skipped otherwise): sized so that the
#     blob still fits but the manifest does not (the kernel's ENOSPC), then smaller than the blob (refused by
#     the free-space check before writing); both times the previous checkpoint stays intact;
#  4. retention that cannot delete a leftover (a mount point in its way): the save itself succeeds, the
#     failure is printed and logged as a "checkpoint_warning" line.
# usage: disk_full_test.sh NATS_BINARY SOURCE_DIR DATA_DIR
set -euo pipefail
nats=$1 src=$2 data=$3
out=$(mktemp -d)
mnt="$out/tmpfs"
busy="$out/retention/ckpt/step_00000001.partial"
cleanup() {
  for m in "$mnt" "$busy"; do if mountpoint -q "$m" 2>/dev/null; then umount "$m" || true; fi; done
  rm -rf "$out"
}
trap cleanup EXIT
[ -n "${KEEP_OUT:-}" ] && trap - EXIT && echo "keeping $out"
common=(--config "$src/configs/tiny.textproto" --set model.n_layer=1 --set model.d_model=32 --set model.n_head=2
        --set model.context_length=32 --set train.log_interval=1 --set train.eval_interval=0
        --set train.eval_windows=2 --set train.threads=1 --set checkpoint.interval_steps=2
        --set checkpoint.keep_last=0 --set data.train_path="$data/books/train.tok"
        --set data.val_path="$data/books/val.tok")
fail() { echo "FAIL: $*"; exit 1; }
expect_in() {  # file, text...
  local file=$1; shift
  for text in "$@"; do grep -qF -- "$text" "$file" || { cat "$file"; fail "'$text' not in $file"; }; done
}
checkpoint_bytes() { du -sb --apparent-size "$1" | cut -f1; }
blob_bytes() { python3 -c "import json,sys; print([r for r in map(json.loads, open(sys.argv[1])) if r['kind']=='checkpoint'][-1]['bytes_total'])" "$1"; }
verify() { "$nats" inspect "$1" > "$out/inspect.log" 2>&1 || { cat "$out/inspect.log"; fail "$1 does not verify"; }; }

# 1. STOP: step 2 saved, then the blob of step 4 hits ENOSPC.
run="$out/stop"
"$nats" train "${common[@]}" --set train.steps=2 --set train.run_dir="$run" > "$out/stop0.log"
half=$(( $(checkpoint_bytes "$run/ckpt/step_00000002") / 2 ))
needed=$(blob_bytes "$run/metrics.jsonl")
rc=0
NATS_FAULT_ENOSPC_AFTER_BYTES=$half "$nats" train "${common[@]}" --set train.steps=6 --set train.run_dir="$run" \
  --resume > "$out/stop1.log" 2>&1 || rc=$?
[ "$rc" = 1 ] || { cat "$out/stop1.log"; fail "STOP: exit code $rc, expected 1"; }
expect_in "$out/stop1.log" "checkpoint step 4 was not saved" "$run/ckpt/step_00000004.partial/rank_0.bin" \
  "No space left on device" "the checkpoint needs $needed bytes" \
  "the previous checkpoint $run/ckpt/step_00000002 is intact"
[ ! -e "$run/ckpt/step_00000004.partial" ] || fail "STOP: the partial save was left behind"
[ "$(ls "$run/ckpt" | grep -c '^step_')" = 1 ] || { ls "$run/ckpt"; fail "STOP: expected only step_00000002"; }
verify "$run/ckpt/step_00000002"
"$nats" train "${common[@]}" --set train.steps=6 --set train.run_dir="$run" --resume > "$out/stop2.log"
expect_in "$out/stop2.log" "resumed from $run/ckpt/step_00000002" "checkpoint step 6 ->"
echo "STOP: exit 1 naming the blob and the $needed bytes needed; step 2 intact; --resume finished the run"

# 2. CONTINUE: step 4 fails (logged), steps 6 and 8 are saved.
run="$out/continue"
"$nats" train "${common[@]}" --set train.steps=2 --set train.run_dir="$run" > "$out/cont0.log"
after=$(( $(checkpoint_bytes "$run/ckpt/step_00000002") / 2 ))
NATS_FAULT_ENOSPC_AFTER_BYTES=$after "$nats" train "${common[@]}" --set train.steps=8 --set train.run_dir="$run" \
  --set checkpoint.on_save_error=CONTINUE --resume > "$out/cont1.log" 2>&1 \
  || { cat "$out/cont1.log"; fail "CONTINUE: nats train failed"; }
expect_in "$out/cont1.log" "checkpoint error (checkpoint.on_save_error = CONTINUE" "checkpoint step 4 was not saved" \
  "checkpoint step 6 ->" "checkpoint step 8 ->" "checkpoint.on_save_error STOP -> CONTINUE"
expect_in "$run/metrics.jsonl" '"kind":"checkpoint_error","rank":0,"step":4,"code":"RESOURCE_EXHAUSTED"'
[ ! -e "$run/ckpt/step_00000004" ] && [ ! -e "$run/ckpt/step_00000004.partial" ] || fail "CONTINUE: step 4 exists"
for s in 2 6 8; do verify "$run/ckpt/step_0000000$s"; done
echo "CONTINUE: step 4's ENOSPC logged as checkpoint_error, steps 6 and 8 saved, exit 0"

# 3. A real full file system.
mkdir -p "$mnt"
if ! mount -t tmpfs -o size=64m tmpfs "$mnt" 2>/dev/null; then
  echo "tmpfs: skipped (this user may not mount a tmpfs)"
  exit 0
fi
run="$out/tmpfs_run"
"$nats" train "${common[@]}" --set train.steps=2 --set train.run_dir="$run" --set checkpoint.dir="$mnt/ckpt" \
  > "$out/fs0.log"
needed=$(blob_bytes "$run/metrics.jsonl")
used=$(( $(stat -f -c '%b - %a' "$mnt") ))  # blocks in use (tmpfs blocks are pages)
page=$(stat -f -c '%S' "$mnt")
blob_pages=$(( (needed + page - 1) / page ))
# Room for the blob plus one page: the free-space check passes, the kernel refuses the manifest's second page.
mount -o remount,size=$(( (used + blob_pages + 1) * page )) "$mnt"
rc=0
"$nats" train "${common[@]}" --set train.steps=4 --set train.run_dir="$run" --set checkpoint.dir="$mnt/ckpt" \
  --resume > "$out/fs1.log" 2>&1 || rc=$?
[ "$rc" = 1 ] || { cat "$out/fs1.log"; fail "tmpfs: exit code $rc, expected 1"; }
expect_in "$out/fs1.log" "checkpoint step 4 was not saved" "No space left on device" "the checkpoint needs $needed bytes" \
  "the previous checkpoint $mnt/ckpt/step_00000002 is intact"
[ ! -e "$mnt/ckpt/step_00000004.partial" ] || fail "tmpfs: the partial save was left behind"
verify "$mnt/ckpt/step_00000002"
kernel=$(grep -o "cannot [a-z]* [^ ]*: No space left on device" "$out/fs1.log" | head -1)
# Smaller than the blob: refused before a byte is written.
mount -o remount,size=$(( (used + blob_pages / 2) * page )) "$mnt"
rc=0
"$nats" train "${common[@]}" --set train.steps=4 --set train.run_dir="$run" --set checkpoint.dir="$mnt/ckpt" \
  --resume > "$out/fs2.log" 2>&1 || rc=$?
[ "$rc" = 1 ] || { cat "$out/fs2.log"; fail "tmpfs (small): exit code $rc, expected 1"; }
expect_in "$out/fs2.log" "checkpoint step 4 was not saved: not enough free space in $mnt/ckpt" \
  "the checkpoint needs $needed bytes"
verify "$mnt/ckpt/step_00000002"
echo "tmpfs: kernel ENOSPC ($kernel) and the free-space check both stop the run with step 2 intact"

# 4. A retention failure is a warning: the leftover of an interrupted save is a busy mount point.
run="$out/retention"
"$nats" train "${common[@]}" --set train.steps=2 --set train.run_dir="$run" > "$out/ret0.log"
mkdir -p "$busy" && mount -t tmpfs -o size=1m tmpfs "$busy"
"$nats" train "${common[@]}" --set train.steps=4 --set train.run_dir="$run" --resume > "$out/ret1.log" 2>&1 \
  || { cat "$out/ret1.log"; fail "retention: nats train failed"; }
expect_in "$out/ret1.log" "checkpoint step 4 ->" "checkpoint warning: cannot remove $busy"
expect_in "$run/metrics.jsonl" '"kind":"checkpoint_warning","rank":0,"step":4,"message":"cannot remove'
umount "$busy"
echo "retention: a failed deletion is printed and logged as checkpoint_warning; step 4 saved"
