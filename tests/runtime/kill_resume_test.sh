#!/usr/bin/env bash
# Fault injection end to end: `nats train` (tiny dense model, a checkpoint every 2 steps, keep_last 2) is
# SIGKILLed at KILLS seeded pseudo-random moments and resumed with --resume after each, until it finishes.
# Half the kills are at a named crash point inside the save (NATS_CRASH_POINT=name:nth, the points of
# checkpoints/crash_point.h: staging, blob slices, fsync, manifest, commit rename, `latest`, retention),
# half by the driver at a random moment after a chosen step's log line (kill -9, which may also land in a
# save). After every kill:
#   - every checkpoint left in the root passes `nats inspect` (manifest checksum, every slice's CRC);
#   - no committed step is lost: the newest complete step is >= the last step the run logged as saved,
#     and the next attempt resumes from exactly that step (also when `latest` lags behind it).
# At the end the per-step losses (the last logged line of each step) and the final checkpoint's tensors
# (every slice CRC in `nats inspect --slices`) equal a straight run's bit for bit on one rank; then the
# same under `mpirun -np 2` (NP2_KILLS kills, a rank killed by the driver or at a crash point), against a
# straight np 2 run bit for bit (same world size) and against the one-rank run to 2e-3 (float sums in
# another order). Prints the counts: kills, kills inside a save, resumes, steps lost (must be 0).
# usage: kill_resume_test.sh NATS_BINARY SOURCE_DIR DATA_DIR    (env: KILLS=20 NP2_KILLS=4 SEED=14)
set -euo pipefail
nats=$1 src=$2 data=$3
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
python3 - "$nats" "$src" "$data" "$out" "${KILLS:-20}" "${NP2_KILLS:-4}" "${SEED:-14}" <<'PY'
import glob, json, os, random, re, signal, subprocess, sys, time

nats, src, data, out, kills_wanted, np2_kills_wanted, seed = sys.argv[1:4] + [sys.argv[4]] + list(map(int, sys.argv[5:8]))
rng = random.Random(seed)
MPI = ["mpirun", "--allow-run-as-root", "--oversubscribe", "--bind-to", "none", "-x", "NATS_CRASH_POINT"]
POINTS = ["staging_ready", "blob_slice_written", "blob_synced", "manifest_tmp_written", "manifest_written",
          "step_dir_renamed", "latest_tmp_written", "latest_written", "retention_deleting"]

def args(run_dir, steps):
    sets = ["model.n_layer=1", "model.d_model=32", "model.n_head=2", "model.context_length=32",
            f"train.steps={steps}", "train.log_interval=1", "train.eval_interval=0", "train.eval_windows=2",
            "train.threads=1", "checkpoint.interval_steps=2", "checkpoint.keep_last=2",
            f"data.train_path={data}/books/train.tok", f"data.val_path={data}/books/val.tok",
            f"train.run_dir={run_dir}"]
    a = [nats, "train", "--config", f"{src}/configs/tiny.textproto"]
    for s in sets:
        a += ["--set", s]
    return a

def launch(np, run_dir, steps, extra=(), crash=None):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("NATS_CRASH_POINT", None)
    if crash:
        env["NATS_CRASH_POINT"] = crash
    cmd = args(run_dir, steps) + list(extra)
    if np > 1:
        env.setdefault("NATS_CRASH_POINT", "")
        cmd = MPI + ["-np", str(np)] + cmd
    log = open(f"{run_dir}.attempts.log", "a")
    log.write(f"\n=== {' '.join(cmd[-3:])} crash={crash}\n")
    log.flush()
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True), log

def finish(proc, log, timeout=120):
    text, _ = proc.communicate(timeout=timeout)
    log.write(text)
    log.close()
    return proc.returncode, text

def straight(np, run_dir, steps):
    proc, log = launch(np, run_dir, steps)
    rc, text = finish(proc, log)
    assert rc == 0, f"straight np {np} run failed:\n{text[-3000:]}"

def records(run_dir):
    with open(f"{run_dir}/metrics.jsonl") as f:
        return [json.loads(l) for l in f if l.strip()]

def losses(run_dir):
    d = {}
    for r in records(run_dir):
        if r["kind"] == "train":
            d[r["step"]] = r["loss"]   # a resumed run logs a step again: the last line is the one that counts
    return d

def complete_steps(root):
    return sorted(int(m.group(1)) for p in glob.glob(f"{root}/step_*/manifest.pb")
                  if (m := re.search(r"/step_(\d+)/manifest.pb$", p)))

def inspect(path, *flags):
    p = subprocess.run([nats, "inspect", path, *flags], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return p.returncode, p.stdout

def tensors_section(step_dir):
    rc, text = inspect(step_dir, "--slices", "--no_config", "--no_verify")
    assert rc == 0, text
    return text[text.index("tensors "):]

def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []

def wait_for_step(run_dir, offset, step, proc, limit=60):
    """True once a train line of `step` was appended after byte `offset` of the metrics log."""
    path, deadline = f"{run_dir}/metrics.jsonl", time.time() + limit
    needle = f'"kind":"train","rank":0,"step":{step},'
    while time.time() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with open(path) as f:
                f.seek(offset)
                if needle in f.read():
                    return True
        except OSError:
            pass
        time.sleep(0.005)
    return False

def fingerprint(step_dir):
    """(name, inode, size, mtime) of every file: equal means the directory was not touched."""
    out = []
    for name in sorted(os.listdir(step_dir)):
        st = os.stat(os.path.join(step_dir, name))
        out.append((name, st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(out)

def killed_run(np, run_dir, steps, kills_wanted, label):
    root = f"{run_dir}/ckpt"
    verified = {}
    stats = dict(kills=0, in_save=0, resumes=0, lost=0, stale_latest=0, inspected=0, attempts=0)
    first = True
    while True:
        stats["attempts"] += 1
        newest_before = (complete_steps(root) or [0])[-1]
        extra = [] if first else ["--resume"]
        crash = timer = None
        if stats["kills"] < kills_wanted:
            if rng.random() < 0.5:
                point = rng.choice(POINTS)
                nth = rng.randint(1, 40 if point == "blob_slice_written" else 2)
                crash = f"{point}:{nth}"
            else:
                timer = (newest_before + rng.randint(1, 3), rng.uniform(0, 0.08))
        offset = os.path.getsize(f"{run_dir}/metrics.jsonl") if os.path.exists(f"{run_dir}/metrics.jsonl") else 0
        proc, log = launch(np, run_dir, steps, extra, crash)
        if timer and wait_for_step(run_dir, offset, min(timer[0], steps), proc):
            time.sleep(timer[1])
            victims = [proc.pid] if np == 1 else (children(proc.pid)[-1:] or [proc.pid])
            for pid in victims:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        rc, text = finish(proc, log)
        if not first:
            m = re.search(r"resumed from (\S+): step (\d+)", text)
            want = newest_before
            got = int(m.group(2)) if m else 0
            assert got == want, f"{label}: resumed from step {got}, but the newest complete step was {want}\n{text[-2000:]}"
            stats["resumes"] += 1
        first = False
        if rc == 0:
            assert "summary:" in text, text[-2000:]
            return stats
        died = "NATS_CRASH_POINT: SIGKILL" in text or rc in (-9, 137) or "signal 9" in text or "Killed" in text
        assert died, f"{label}: nats train failed (rc {rc}) without being killed:\n{text[-3000:]}"
        stats["kills"] += 1
        partial = glob.glob(f"{root}/*.partial") + glob.glob(f"{root}/*.deleting")
        if crash or partial:
            stats["in_save"] += 1
        # Nothing committed is lost, and every checkpoint left behind is whole.
        steps_now = complete_steps(root)
        saved = [r["step"] for r in records(run_dir) if r["kind"] == "checkpoint"]
        newest = steps_now[-1] if steps_now else 0
        if saved and saved[-1] > newest:
            stats["lost"] += saved[-1] - newest
        if os.path.exists(f"{root}/latest"):
            latest = int(open(f"{root}/latest").read().strip().split("_")[1])
            stats["stale_latest"] += latest < newest
        for s in steps_now:
            step_dir = f"{root}/step_{s:08d}"
            key = fingerprint(step_dir)
            if verified.get(step_dir) == key:
                continue  # not touched since `nats inspect` verified it after an earlier kill
            rc_i, text_i = inspect(step_dir)
            assert rc_i == 0 and "verify      OK" in text_i, f"{label}: step {s} is damaged after a kill:\n{text_i}"
            verified[step_dir] = key
            stats["inspected"] += 1

def compare(label, ref_dir, run_dir, steps, tol):
    a, b = losses(ref_dir), losses(run_dir)
    assert sorted(a) == sorted(b) == list(range(1, steps + 1)), (label, sorted(b))
    worst = max(abs(a[s] - b[s]) for s in a)
    assert worst <= tol, f"{label}: max |loss difference| {worst} > {tol}"
    return worst

t0 = time.time()
STEPS = 40
straight(1, f"{out}/straight", STEPS)
st = killed_run(1, f"{out}/killed", STEPS, kills_wanted, "np 1")
worst = compare("np 1", f"{out}/straight", f"{out}/killed", STEPS, 0.0)
assert tensors_section(f"{out}/straight/ckpt/step_{STEPS:08d}") == tensors_section(f"{out}/killed/ckpt/step_{STEPS:08d}"), \
    "np 1: the final checkpoint's tensors differ from the straight run's"
assert st["kills"] == kills_wanted and st["lost"] == 0, st
print(f"np 1: {st['kills']} kills ({st['in_save']} inside a save, {st['stale_latest']} left `latest` behind the "
      f"newest step), {st['resumes']} resumes, {st['inspected']} checkpoints verified after kills, steps lost "
      f"{st['lost']}; {STEPS} losses and every final tensor CRC equal the straight run bit for bit "
      f"({time.time() - t0:.0f} s)")

if np2_kills_wanted > 0:
    t1 = time.time()
    STEPS2 = 16
    straight(2, f"{out}/straight2", STEPS2)
    st2 = killed_run(2, f"{out}/killed2", STEPS2, np2_kills_wanted, "np 2")
    exact = compare("np 2 vs np 2", f"{out}/straight2", f"{out}/killed2", STEPS2, 0.0)
    assert tensors_section(f"{out}/straight2/ckpt/step_{STEPS2:08d}") == \
        tensors_section(f"{out}/killed2/ckpt/step_{STEPS2:08d}"), "np 2: final tensors differ from the straight np 2 run"
    straight(1, f"{out}/straight1", STEPS2)  # the learning-rate schedule depends on train.steps
    one, b = losses(f"{out}/straight1"), losses(f"{out}/killed2")
    worst2 = max(abs(one[s] - b[s]) for s in b)
    assert worst2 <= 2e-3, f"np 2 vs np 1: {worst2}"
    assert st2["kills"] == np2_kills_wanted and st2["lost"] == 0, st2
    print(f"np 2: {st2['kills']} kills ({st2['in_save']} inside a save), {st2['resumes']} resumes, "
          f"{st2['inspected']} checkpoints verified, steps lost {st2['lost']}; losses equal the straight np 2 run "
          f"bit for bit, max |loss difference| to the one-rank run {worst2:.2e} (tolerance 2e-3) "
          f"({time.time() - t1:.0f} s)")
PY
