#!/usr/bin/env bash
# `nats plot` on a dense and a NAtS run writes PNG + SVG figures: checked for size, for drawn pixels (not a
# blank canvas) and for the colours of the curves it promises (the NAtS figure draws the KV fraction in black).
# usage: plot_test.sh NATS_BINARY SOURCE_DIR DATA_DIR
set -euo pipefail
nats=$1 src=$2 data=$3
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
common=(--set train.steps=6 --set train.log_interval=1 --set train.eval_interval=3 --set train.eval_windows=2
        --set model.d_model=64 --set model.context_length=32 --set train.threads=1
        --set data.train_path="$data/books/train.tok" --set data.val_path="$data/books/val.tok")
"$nats" train --config "$src/configs/tiny.textproto" "${common[@]}" --set train.run_dir="$out/dense" > /dev/null
"$nats" train --config "$src/configs/tiny_nats.textproto" "${common[@]}" --set train.run_dir="$out/nats" > /dev/null
"$nats" plot "$out/dense" "$out/nats" --out "$out/plots" > "$out/plot.log"
cat "$out/plot.log"
if "$nats" plot "$out/missing" 2> "$out/err.log"; then echo "plot of a missing run succeeded"; exit 1; fi
grep -q "no metrics" "$out/err.log"
/usr/bin/python3 - "$out/plots" <<'PY'
import os, struct, sys
import matplotlib.image as mpimg
d = sys.argv[1]
for stem in ("loss", "nats_nats"):
    png, svg = f"{d}/{stem}.png", f"{d}/{stem}.svg"
    assert os.path.getsize(svg) > 5000 and open(svg).read().lstrip().startswith("<?xml"), svg
    head = open(png, "rb").read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", png
    width, height = struct.unpack(">II", head[16:24])
    assert width >= 600 and height >= 300, (png, width, height)
    img = mpimg.imread(png)[..., :3]
    drawn = (img.sum(axis=2) < 2.9).mean()  # pixels that are not white
    assert 0.01 < drawn < 0.6, (png, drawn)
    print(f"{png}: {width}x{height}, {100 * drawn:.1f}% drawn")
assert not os.path.exists(f"{d}/nats_dense.png"), "a dense run has no token types to plot"
img = mpimg.imread(f"{d}/nats_nats.png")[..., :3]
black = (img.max(axis=2) < 0.15).mean()
assert black > 0.001, f"no KV-fraction curve (black) in nats_nats.png: {black}"
PY
echo "nats plot wrote the loss and NAtS figures"
