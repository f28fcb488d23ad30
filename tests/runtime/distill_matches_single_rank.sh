#!/usr/bin/env bash
# Post-training under mpirun -np 2 trains the scorers of one rank (docs/posttraining.md): a dense base model, then
# train.objective = DISTILL with init_from and the KV-fraction controller on 1 rank, dp 2, dp 2 with ZeRO-1 and
# sp 2 (full KV exchange, exact scorer gradients). Losses, lambdas and the final scorer weights agree with the
# single-rank run to float tolerance (20 steps; sums in another order drift slightly), the frozen weights are bit
# for bit the base's in every layout, and the ranks of one run log the same lambdas.
# usage: distill_matches_single_rank.sh NATS_BINARY SOURCE_DIR DATA_DIR
set -euo pipefail
nats=$1 src=$2 data=$3
out=$(mktemp -d)
trap '[ -n "${KEEP:-}" ] || rm -rf "$out"' EXIT; echo "out=$out"
mpi=(mpirun --allow-run-as-root --oversubscribe --bind-to none -np 2)
common=(--config "$src/configs/tiny.textproto" --set data.tokenizer=byte --set model.vocab_size=320
        --set model.n_layer=2 --set model.d_model=32 --set model.n_head=2 --set model.context_length=64
        --set nats.window=8 --set train.batch_size=8 --set train.eval_interval=0 --set train.eval_windows=4
        --set train.log_interval=1 --set checkpoint.save_final=true
        --set data.train_path="$data/books_byte/train.tok" --set data.val_path="$data/books_byte/val.tok")
"$nats" train "${common[@]}" --set train.steps=100 --set optim.lr=1e-2 --set train.threads=1 \
  --set train.run_dir="$out/base" > "$out/base.log"
distill=("${common[@]}" --set model.attention=NATS --set train.objective=DISTILL --set train.init_from="$out/base/ckpt"
         --set train.steps=20 --set optim.lr=2e-2 --set optim.warmup_steps=0 --set optim.weight_decay=0
         --set nats.lambda=1e-6 --set nats.target_kv_fraction=0.3 --set train.distill_kl_weight=0.5)
"$nats" train "${distill[@]}" --set train.threads=1 --set train.run_dir="$out/one" > "$out/one.log"
"${mpi[@]}" "$nats" train "${distill[@]}" --set train.run_dir="$out/dp2" > "$out/dp2.log"
"${mpi[@]}" "$nats" train "${distill[@]}" --set parallel.zero_stage=1 --set train.run_dir="$out/zero" > "$out/zero.log"
"${mpi[@]}" "$nats" train "${distill[@]}" --set parallel.sp=2 --set parallel.sp_exchange=FULL \
  --set train.run_dir="$out/sp2" > "$out/sp2.log"
for run in base one dp2 zero sp2; do "$nats" inspect "$out/$run/ckpt" --no_config --slices > "$out/$run.inspect"; done
python3 - "$out" <<'PY'
import json, struct, sys
out = sys.argv[1]

def tensors(run):
    """name -> list of float32 values, read from the blobs as `nats inspect --slices` lists them."""
    result, name, root = {}, None, None
    for line in open(f"{out}/{run}.inspect"):
        if line.startswith("checkpoint "):
            root = line.split()[1]
        parts = line.split()
        if parts and (parts[0].startswith("model/") or parts[0].startswith("optim/")):
            name = parts[0]
            result[name] = {}
        elif parts and parts[0].startswith("[") and name:
            begin = int(parts[0][1:-1])
            blob, offset, nbytes = parts[4], int(parts[5][1:]), int(parts[6])
            with open(f"{root}/{blob}", "rb") as f:
                f.seek(offset)
                values = struct.unpack(f"<{nbytes // 4}f", f.read(nbytes))
            for i, v in enumerate(values):
                result[name][begin + i] = v
    return {k: [v[i] for i in sorted(v)] for k, v in result.items()}

def train_lines(path):
    return {r["step"]: r for r in map(json.loads, open(path)) if r["kind"] == "train"}

base, one = tensors("base"), tensors("one")
one_log = train_lines(f"{out}/one/metrics.jsonl")
assert len(one_log) == 20
for run in ("dp2", "zero", "sp2"):
    got = tensors(run)
    for name, values in got.items():
        if not name.startswith("model/") or "scorer" in name:
            continue
        assert values == base[name], f"{run}: frozen {name} differs from the base checkpoint"
    worst_w = max(abs(a - b) for name in one if "scorer" in name and name.startswith("model/")
                  for a, b in zip(one[name], got[name]))
    worst_loss = worst_lambda = 0.0
    for log in (f"{out}/{run}/metrics.jsonl", f"{out}/{run}/metrics.rank1.jsonl"):
        lines = train_lines(log)
        assert sorted(lines) == sorted(one_log), (log, sorted(lines))
        for s, r in one_log.items():
            worst_loss = max(worst_loss, abs(r["loss"] - lines[s]["loss"]) / max(abs(r["loss"]), 1e-12))
            worst_lambda = max(worst_lambda, abs(r["lambda"] - lines[s]["lambda"]) / r["lambda"])
    rank0 = train_lines(f"{out}/{run}/metrics.jsonl")
    rank1 = train_lines(f"{out}/{run}/metrics.rank1.jsonl")
    assert all(rank0[s]["lambda"] == rank1[s]["lambda"] for s in rank0), f"{run}: ranks disagree on lambda"
    print(f"{run}: max |scorer weight diff| {worst_w:.2e}, max rel loss diff {worst_loss:.2e}, "
          f"max rel lambda diff {worst_lambda:.2e} over 20 steps")
    assert worst_w < 1e-3, f"{run}: scorer weights differ from one rank by {worst_w}"
    assert worst_loss < 1e-2, f"{run}: distill loss differs from one rank by {worst_loss} (relative)"
    assert worst_lambda < 1e-2, f"{run}: lambda differs from one rank by {worst_lambda} (relative)"
print("DISTILL under dp 2, ZeRO-1 and sp 2 matches the single-rank run")
PY
