#!/usr/bin/env bash
# `nats plot` on a dense and a NAtS run writes PNG + SVG figures: checked for size, for drawn pixels (not a
# blank canvas) and for the colours of the curves it promises (the NAtS figure draws the KV fraction in black).
# The mask picture of the NAtS run (from the mask_window.json `nats train` wrote) has the expected size, and its
# cells have the colours the learned types and the mask rule give them; the dense run has none (index.md says so).
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
# The mask picture: the trained model's types from mask_window.json, drawn at the script's fixed geometry.
test ! -e "$out/dense/mask_window.json"  # a dense run writes none
grep -q "dense: dense attention, no token types" "$out/plots/index.md"
grep -q "mask_nats.png" "$out/plots/index.md"
/usr/bin/python3 - "$out/plots" "$out/nats/mask_window.json" "$src/launch" <<'PY'
import json, os, struct, sys
import matplotlib.image as mpimg
d, window_path, launch = sys.argv[1:]
sys.path.insert(0, launch)
import plot_runs as p
# The drawn mask follows docs/method.md 3 (its worked example, W = 2).
example = p.visible_mask("GLSLLGSLG", 2)
assert ["".join("1" if example[i][j] else "." for j in range(i + 1)) for i in range(9)] == [
    "1", "11", "111", "1111", "11111", "11.111", "1....11", "1....111", "1....1111"], example
w = json.load(open(window_path))
n = len(w["tokens"])
assert w["kind"] == "mask_window" and w["step"] == 6 and n == 32 and len(w["pieces"]) == n, (w["step"], n)
layers = [l for l in w["layers"] if l["nats"]]
assert len(layers) == 2 and all(len(l["types"]) == 4 and all(len(t) == n and set(t) <= set("GLS") for t in
                                                           l["types"]) for l in layers), layers
assert all(l["types"][h][0] == "G" for l in layers for h in range(4)), "position 0 is global at inference"
png, svg = f"{d}/mask_nats.png", f"{d}/mask_nats.svg"
assert os.path.getsize(svg) > 5000 and open(svg).read().lstrip().startswith("<?xml"), svg
head = open(png, "rb").read(24)
assert head[:8] == b"\x89PNG\r\n\x1a\n", png
width, height = struct.unpack(">II", head[16:24])
assert (width, height) == (p.MASK_PANEL_PX * 2, p.MASK_FIGURE_HEIGHT_PX), (width, height)
img = (mpimg.imread(png)[..., :3] * 255).round().astype(int)
cell = p.MASK_SIDE_PX / n
def pixel(panel, i, j):  # centre of mask cell (query i, key j) in panel `panel`
    return img[int(p.MASK_TOP_PX + (i + 0.5) * cell), int(panel * p.MASK_PANEL_PX + p.MASK_LEFT_PX + (j + 0.5) * cell)]
def near(rgb, colour):
    return max(abs(int(a) - b) for a, b in zip(rgb, colour)) <= 3
seen = set()
for panel, layer in enumerate(layers):
    types = layer["types"][0]
    for i, t in enumerate(types):  # the diagonal is always visible, in the colour of the token's type
        assert near(pixel(panel, i, i), p.TYPE_COLOURS[t]), (panel, i, t, pixel(panel, i, i))
        seen.add(t)
    assert near(pixel(panel, 0, n - 1), p.FUTURE_COLOUR), "above the diagonal is white"
    mask = p.visible_mask(types, w["window"])
    hidden = [(i, j) for i in range(n) for j in range(i) if not mask[i][j]]
    for i, j in hidden[:5]:
        assert near(pixel(panel, i, j), p.HIDDEN_COLOUR), (panel, i, j)
    strip_y = p.MASK_TOP_PX - p.MASK_STRIP_GAP_PX - p.MASK_STRIP_PX // 2
    for j, t in enumerate(types):
        x = int(panel * p.MASK_PANEL_PX + p.MASK_LEFT_PX + (j + 0.5) * cell)
        assert near(img[strip_y, x], p.TYPE_COLOURS[t]), ("type strip", panel, j, t)
for t, colour in p.TYPE_COLOURS.items():  # every type's colour is drawn (the legend at least)
    assert (abs(img - colour).max(axis=2) <= 3).sum() > 20, t
print(f"{png}: {width}x{height}, types on the diagonal: {''.join(sorted(seen))}")
PY
echo "nats plot wrote the loss, NAtS and mask figures"
