#!/usr/bin/env bash
# `nats sweep` end to end, with real `nats train` processes on real (byte-level) books:
#  1. --list shows every cell of a 2 x 2 grid (two depths x two FLOP budgets) with steps and FLOPs, before any run;
#  2. an uninterrupted sweep (A) finishes all 4 cells; a second run of it runs nothing;
#  3. sweep B is interrupted twice: SIGTERM during cell 2 (the cell saves and stops, the sweep exits 143), then
#     SIGKILL of the sweep during cell 3 (its trainer is told to save and stop by the parent-death signal);
#     reruns complete it, resuming the interrupted cells and never starting a finished one again, and its
#     results.csv equals A's in every column but timing and paths (losses bit for bit: resume is exact);
#  4. while a cell is locked by another process (a python flock here), a sweep skips it and says so;
#  5. --emit slurm (a 2-cell grid): the script passes bash -n, and run by a stub sbatch (each array index in
#     turn) with a stub srun on PATH it runs each index's cell under srun, with A's losses;
#  5b. --launcher "mpirun -np 2 ..." runs a cell as a 2-rank job;
#  6. bad sweep files: no horizon, two horizon lists, an unknown field in an axis -> one-line errors naming the file.
# usage: sweep_e2e_test.sh NATS_BINARY SOURCE_DIR
set -euo pipefail
nats=$(realpath "$1") src=$(realpath "$2")
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
cd "$work"
"$nats" prepare --tokenizer byte --out_dir "$work/bytes" >/dev/null

grid() {  # grid FILE [extra lines...]: the 2 x 2 grid of configs/sweeps/tiny_2x2.textproto on these shards
  local file=$1; shift
  sed -e "s|^base_config:.*|base_config: \"$src/configs/tiny.textproto\"|" \
      -e "s|data/books_byte/|$work/bytes/|g" "$src/configs/sweeps/tiny_2x2.textproto" > "$file"
  for line in "$@"; do echo "$line" >> "$file"; done
}
grid "$work/grid.textproto"

# 1. The plan.
"$nats" sweep --grid "$work/grid.textproto" --out "$work/A" --list > list.txt
cat list.txt
for cell in L1_C4e9 L2_C4e9 L1_C8e9 L2_C8e9; do grep -q "$cell" list.txt || { echo "FAIL: --list lacks $cell"; exit 1; }; done
grep -q "^total: " list.txt || { echo "FAIL: --list has no total line"; exit 1; }
[ ! -e "$work/A/cells" ] || { echo "FAIL: --list ran or created cells"; exit 1; }

# 2. Uninterrupted.
"$nats" sweep --grid "$work/grid.textproto" --out "$work/A" > a.log
grep -q "sweep: 4/4 cells done" a.log || { cat a.log; echo "FAIL: sweep A did not finish"; exit 1; }
"$nats" sweep --grid "$work/grid.textproto" --out "$work/A" > a2.log
grep -q "sweep: 4/4 cells done (0 run now" a2.log || { cat a2.log; echo "FAIL: rerun of a finished sweep ran cells"; exit 1; }

# 3. Interrupted twice.
wait_for_checkpoint() {  # CELL: until the cell has a complete checkpoint
  for _ in $(seq 600); do
    ls "$work/B/cells/$1/ckpt"/step_*/manifest.pb >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "FAIL: no checkpoint of $1 appeared"; exit 1
}
cell_pid() {  # CELL: the pid of the trainer of that cell
  pgrep -f "cells/$1/cell.textproto" | head -1
}
"$nats" sweep --grid "$work/grid.textproto" --out "$work/B" > b1.log 2>&1 &
sweep=$!
wait_for_checkpoint L2_C4e9
# The cell has only 24 steps, so on a fast machine it could finish before the stop request reaches it. Freeze
# its trainer, interrupt the sweep, wait until the sweep has forwarded the request, then let the trainer go on:
# the request is then pending when it resumes, whatever the machine's speed.
trainer=$(cell_pid L2_C4e9)
[ -n "$trainer" ] && kill -STOP "$trainer" 2>/dev/null || true
kill -TERM $sweep
for _ in $(seq 100); do grep -q "stop requested" b1.log && break; sleep 0.1; done
[ -n "$trainer" ] && kill -CONT "$trainer" 2>/dev/null || true
rc=0; wait $sweep || rc=$?
cat b1.log
[ "$rc" = 143 ] || { echo "FAIL: a SIGTERMed sweep exits $rc, want 143"; exit 1; }
grep -q "L2_C4e9: stopped" b1.log || { echo "FAIL: the interrupted cell was not reported as stopped"; exit 1; }
[ ! -e "$work/B/cells/L2_C4e9/summary.json" ] || { echo "FAIL: the stopped cell has a summary"; exit 1; }

"$nats" sweep --grid "$work/grid.textproto" --out "$work/B" > b2.log 2>&1 &
sweep=$!
wait_for_checkpoint L1_C8e9
trainer=$(cell_pid L1_C8e9)
kill -KILL $sweep
wait $sweep 2>/dev/null || true
# The orphaned trainer is told to save and stop by the parent-death signal.
for _ in $(seq 300); do { [ -n "$trainer" ] && kill -0 "$trainer" 2>/dev/null; } || break; sleep 0.1; done
grep -q "stop requested (signal 10)" "$work/B/cells/L1_C8e9/train.log" ||
  { tail -3 "$work/B/cells/L1_C8e9/train.log"; echo "FAIL: the orphaned trainer did not save and stop"; exit 1; }

# 4. A cell locked by another process is skipped (the flock a running sweep holds, taken here by python).
mkdir -p "$work/B/cells/L2_C8e9"
python3 -c 'import fcntl, sys, time; f = open(sys.argv[1], "w"); fcntl.flock(f, fcntl.LOCK_EX); time.sleep(60)' \
  "$work/B/cells/L2_C8e9/.lock" &
holder=$!
sleep 0.5
"$nats" sweep --grid "$work/grid.textproto" --out "$work/B" --index 3 > locked.log 2>&1
kill $holder; wait $holder 2>/dev/null || true
grep -q "L2_C8e9: another process is running it" locked.log || { cat locked.log; echo "FAIL: a locked cell was run"; exit 1; }
[ ! -e "$work/B/cells/L2_C8e9/summary.json" ] || { echo "FAIL: the locked cell ran"; exit 1; }

"$nats" sweep --grid "$work/grid.textproto" --out "$work/B" > b3.log 2>&1
cat b2.log b3.log
grep -q "sweep: 4/4 cells done" b3.log || { echo "FAIL: sweep B did not finish after the reruns"; exit 1; }
grep -q "resumed from step" "$work/B/cells/L1_C8e9/train.log" || { echo "FAIL: L1_C8e9 did not resume"; exit 1; }
python3 - "$work" <<'PY'
import collections, csv, re, sys
work = sys.argv[1]
def rows(name):
    return {r["cell"]: r for r in csv.DictReader(open(f"{work}/{name}/results.csv"))}
a, b = rows("A"), rows("B")
assert a.keys() == b.keys() and len(a) == 4, (a.keys(), b.keys())
skip = {"tokens_per_s", "wall_s", "run_dir", "config_hash"}  # timing; paths (the hash covers train.run_dir)
for cell in a:
    assert a[cell]["status"] == "ok" and b[cell]["status"] == "ok", cell
    for col in a[cell]:
        if col not in skip and a[cell][col] != b[cell][col]:
            sys.exit(f"FAIL: {cell} {col}: uninterrupted {a[cell][col]} != interrupted {b[cell][col]}")
# Cell starts over the three runs: a finished cell is never started again.
starts = collections.Counter()
for log in ("b1.log", "b2.log", "b3.log"):
    for line in open(f"{work}/{log}"):
        m = re.match(r"\[\d+/4 done\] (\S+): \d+ steps", line)
        if m:
            starts[m.group(1)] += 1
want = {"L1_C4e9": 1, "L2_C4e9": 2, "L1_C8e9": 2, "L2_C8e9": 1}
assert dict(starts) == want, f"FAIL: cell starts {dict(starts)}, want {want} (a finished cell was redone?)"
print("ok: interrupted sweep == uninterrupted sweep (losses bit for bit); cell starts", dict(starts))
PY

# 5. Slurm, with stubs: sbatch runs the script once per array index; srun runs its command.
mkdir -p stubs
cat > stubs/sbatch <<'SH'
#!/usr/bin/env bash
script=$1
range=$(sed -n 's/^#SBATCH --array=\([0-9]*-[0-9]*\).*/\1/p' "$script")
for i in $(seq "${range%-*}" "${range#*-}"); do SLURM_ARRAY_TASK_ID=$i SLURM_ARRAY_JOB_ID=7 bash "$script" || exit $?; done
SH
cat > stubs/srun <<'SH'
#!/usr/bin/env bash
echo "srun stub: $*" >&2
exec "$@"
SH
chmod +x stubs/sbatch stubs/srun
# The smaller budget's two cells only (the same cells as A's first two).
grid "$work/grid_slurm.textproto" && sed -i 's/^flops:.*/flops: [4e9]/' "$work/grid_slurm.textproto"
"$nats" sweep --grid "$work/grid_slurm.textproto" --out "$work/S" --emit slurm --sbatch=--time=00:10:00 > emit.log
script=$work/S/sweep.sbatch
bash -n "$script" || { echo "FAIL: the emitted script does not parse"; exit 1; }
grep -q "^#SBATCH --array=0-1$" "$script" || { cat "$script"; echo "FAIL: want --array=0-1"; exit 1; }
grep -q "^#SBATCH --time=00:10:00$" "$script" || { echo "FAIL: --sbatch option missing"; exit 1; }
PATH="$work/stubs:$PATH" sbatch "$script" > slurm.log 2>&1 || { cat slurm.log; echo "FAIL: the array tasks failed"; exit 1; }
for cell in L1_C4e9 L2_C4e9; do  # srun's stderr is the cell's log
  grep -q "srun stub: .*nats train --config $work/S/cells/$cell/cell.textproto" "$work/S/cells/$cell/train.log" ||
    { cat slurm.log; echo "FAIL: $cell did not run under srun"; exit 1; }
done
[ "$(grep -c ': done in' slurm.log)" = 2 ] || { cat slurm.log; echo "FAIL: want 2 cells run by the array"; exit 1; }
python3 - "$work" <<'PY'
import csv, sys
work = sys.argv[1]
a = {r["cell"]: r for r in csv.DictReader(open(f"{work}/A/results.csv"))}
s = {r["cell"]: r for r in csv.DictReader(open(f"{work}/S/results.csv"))}
assert sorted(s) == ["L1_C4e9", "L2_C4e9"], sorted(s)
for cell in s:
    assert s[cell]["status"] == "ok", f"FAIL: slurm cell {cell}: {s[cell]['status']}"
    assert s[cell]["loss"] == a[cell]["loss"], f"FAIL: slurm cell {cell} loss {s[cell]['loss']} != {a[cell]['loss']}"
print("ok: every array index ran its cell; losses equal the local sweep's")
PY

# 5b. --launcher: one cell as a real 2-rank data-parallel job under mpirun.
if command -v mpirun >/dev/null; then
  "$nats" sweep --grid "$work/grid_slurm.textproto" --out "$work/M" --index 0 \
    --launcher "mpirun -np 2 --allow-run-as-root --oversubscribe --bind-to none -x OMP_NUM_THREADS=1" > mpi.log 2>&1 ||
    { cat mpi.log; tail -5 "$work/M/cells/L1_C4e9/train.log"; echo "FAIL: the cell under mpirun failed"; exit 1; }
  grep -q "L1_C4e9: done in" mpi.log && [ -f "$work/M/cells/L1_C4e9/metrics.rank1.jsonl" ] ||
    { cat mpi.log; echo "FAIL: the cell did not run on 2 ranks"; exit 1; }
  echo "ok: --launcher mpirun -np 2 ran the cell on 2 ranks"
fi

# 6. Bad sweep files.
bad() {  # DESCRIPTION EXPECTED_TEXT: the last grid written must fail with one line containing the text
  local rc=0
  "$nats" sweep --grid "$work/bad.textproto" --list > bad.out 2> bad.err || rc=$?
  [ "$rc" = 1 ] || { cat bad.err; echo "FAIL: $1: exit $rc, want 1"; exit 1; }
  [ "$(wc -l < bad.err)" = 1 ] && grep -q "bad.textproto" bad.err && grep -q "$2" bad.err ||
    { cat bad.err; echo "FAIL: $1: want one line naming the file and '$2'"; exit 1; }
  echo "ok: $1: $(cat bad.err)"
}
grid "$work/bad.textproto" && sed -i '/^flops:/d' "$work/bad.textproto"
bad "no horizon" "exactly one horizon list"
grid "$work/bad.textproto" "steps: [10]"
bad "two horizon lists" "exactly one horizon list"
grid "$work/bad.textproto" 'axis { field: "nats.lamda" values: ["1e-5"] }'
bad "unknown field in an axis" "lamda"
echo "PASS"
