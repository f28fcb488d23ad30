#!/usr/bin/env bash
# `nats plot --sweep` on fabricated sweep directories (tests/runtime/fake_sweep.py: dense + two NAtS variants,
# 3 budgets x 4 sizes, a metrics.jsonl per cell, a failed and a pending cell):
#  1. with fit.json: every figure as PNG (size, drawn pixels) and SVG (parses as XML, carries its title and the
#     fitted series in its legend); index.md lists them; stdout lists every path written;
#  2. without fit.json and without budget_flops (cells grouped by flops), the sweep moved after it ran (run_dir
#     points nowhere: the cells are found under SWEEP_DIR/cells): data-only figures, said in index.md and on
#     stdout, every cell's curve still drawn; --out honoured;
#  3. a dense-only sweep whose fit.json has no KV fit;
#  4. the errors: no results.csv, a CSV without the needed columns, no ok rows, fit.json not JSON (exit 1, one
#     line naming the file), RUN_DIR and --sweep together (exit 2), an unreadable NATS_PLOT_SCALING_SCRIPT.
# usage: plot_scaling_test.sh NATS_BINARY SOURCE_DIR
set -euo pipefail
nats=$1 src=$2
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
python=/usr/bin/python3
fake=$src/tests/runtime/fake_sweep.py

# check_figures DIR PHRASE...: the five figures in DIR, each SVG containing every PHRASE given for it (stem:text).
check_figures() {
  "$python" - "$@" <<'PY'
import os, struct, sys
import xml.etree.ElementTree as ET
import matplotlib.image as mpimg
d, wants = sys.argv[1], sys.argv[2:]
stems = ("isoflop", "loss_vs_params", "frontier", "loss_vs_kv", "curves")
index = open(f"{d}/index.md").read()
for stem in stems:
    png, svg = f"{d}/{stem}.png", f"{d}/{stem}.svg"
    assert f"`{stem}.png`" in index, (stem, "not in index.md")
    text = open(svg).read()
    assert len(text) > 20000, (svg, len(text))
    ET.fromstring(text.encode())  # well-formed XML
    for want in wants:
        name, phrase = want.split(":", 1)
        if name == stem:
            assert phrase in text, (svg, "lacks", phrase)
    head = open(png, "rb").read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", png
    width, height = struct.unpack(">II", head[16:24])
    assert width >= 800 and height >= 500, (png, width, height)
    img = mpimg.imread(png)[..., :3]
    drawn = (img.sum(axis=2) < 2.9).mean()  # pixels that are not white
    assert 0.02 < drawn < 0.6, (png, drawn)
    print(f"{png}: {width}x{height}, {100 * drawn:.1f}% drawn")
PY
}

# 1. With fit.json.
"$python" "$fake" "$out/sweep" > /dev/null
"$nats" plot --sweep "$out/sweep" > "$out/plot.log"
cat "$out/plot.log"
for stem in isoflop loss_vs_params frontier loss_vs_kv curves; do
  for ext in png svg; do grep -qx "$out/sweep/plots/$stem.$ext" "$out/plot.log"; done
done
grep -qx "$out/sweep/plots/index.md" "$out/plot.log"
if grep -q "no fit.json" "$out/plot.log" "$out/sweep/plots/index.md"; then echo "fit.json was not read"; exit 1; fi
grep -q "cells that are not data: 1 failed, 1 pending" "$out/plot.log"
grep -q "training curves of 36 cells" "$out/sweep/plots/index.md"
check_figures "$out/sweep/plots" "isoflop:parabola minimum" "isoflop:C = 1e15 FLOPs" "isoflop:nats_l1e-04" \
  "loss_vs_params:Approach 3 fit" "frontier:Approach 2 parabola minima" "frontier:Chinchilla" \
  "frontier:Approach 3" "loss_vs_kv:fitted KV frontier" "curves:N = 25.2M" "curves:nats_l1e-05"

# 2. No fit.json, no budget_flops, the sweep moved after it ran; --out elsewhere (and --out=DIR spelling).
"$python" "$fake" "$out/moved" --no-fit --no-budget > /dev/null
mv "$out/moved" "$out/sweep2"
"$nats" plot --sweep="$out/sweep2" --out "$out/plots2" > "$out/plot2.log"
cat "$out/plot2.log"
grep -q "^no fit.json in $out/sweep2: data-only figures" "$out/plot2.log"
grep -q "no fit.json: data-only figures" "$out/plots2/index.md"
grep -q "training curves of 36 cells" "$out/plots2/index.md"  # found under SWEEP_DIR/cells
if grep -q "without metrics" "$out/plot2.log"; then echo "cells not found after the move"; exit 1; fi
test ! -e "$out/sweep2/plots"
check_figures "$out/plots2" "isoflop:no fit.json" "frontier:Chinchilla" "curves:nats_l1e-04"
if grep -q "parabola minimum" "$out/plots2/isoflop.svg"; then echo "parabolas without a fit"; exit 1; fi

# 3. Dense only, a fit with nulls where `nats fit` may write them: no KV part, no Approach 2, no Chinchilla block,
#    an allocation entry without numbers or interval.
"$python" "$fake" "$out/dense" --dense-only > /dev/null
"$python" - "$out/dense/fit.json" <<'PY'
import json, sys
fit = json.load(open(sys.argv[1]))
assert fit["kv"] is None
fit["approach2"] = None
del fit["chinchilla"]
fit["approach3"]["allocation"][0]["tokens_per_param_ci95"] = [None, None]
fit["approach3"]["allocation"].append({"flops": None, "n_opt": None, "d_opt": None, "loss": None})
json.dump(fit, open(sys.argv[1], "w"))
PY
"$nats" plot --sweep "$out/dense" > "$out/plot3.log"
grep -q "fit.json has no KV fit" "$out/plot3.log"
grep -q "fit.json has no Approach 2 result" "$out/plot3.log"
check_figures "$out/dense/plots" "loss_vs_kv:no NAtS rows" "frontier:Approach 3" "frontier:Chinchilla"
if grep -q "parabola minimum" "$out/dense/plots/isoflop.svg"; then echo "parabolas from a null approach2"; exit 1; fi

# 4. Errors: one line naming the file and the fix, exit 1 (2 for bad arguments).
expect_error() {  # expect_error CODE PATTERN ARGS...
  local code=$1 pattern=$2 rc=0
  shift 2
  "$nats" plot "$@" > /dev/null 2> "$out/err.log" || rc=$?
  if [ "$rc" -ne "$code" ] || ! grep -q -- "$pattern" "$out/err.log"; then
    echo "nats plot $*: exit $rc (want $code), stderr:"; cat "$out/err.log"; exit 1
  fi
  echo "ok   nats plot $* -> exit $code: $(head -1 "$out/err.log")"
}
mkdir "$out/empty"
expect_error 1 "$out/empty/results.csv: no such file" --sweep "$out/empty"
mkdir "$out/columns"
printf 'cell,status,params\nc0,ok,1000\n' > "$out/columns/results.csv"
expect_error 1 "$out/columns/results.csv: missing column(s) variant, tokens, loss, budget_flops or flops" \
  --sweep "$out/columns"
mkdir "$out/pending"
head -1 "$out/sweep/results.csv" > "$out/pending/results.csv"
grep ',pending,\|,failed,' "$out/sweep/results.csv" >> "$out/pending/results.csv"
expect_error 1 "no rows with status ok (1 failed, 1 pending)" --sweep "$out/pending"
cp -r "$out/sweep" "$out/badfit"
echo '{"approach3": ' > "$out/badfit/fit.json"
expect_error 1 "$out/badfit/fit.json: not JSON" --sweep "$out/badfit"
expect_error 2 "not both" "$out/sweep" --sweep "$out/sweep"
expect_error 2 "not both" --sweep "$out/sweep" "$out/sweep"
NATS_PLOT_SCALING_SCRIPT=$out/none.py expect_error 1 "set NATS_PLOT_SCALING_SCRIPT" --sweep "$out/sweep"
echo "nats plot --sweep wrote the scaling figures, with and without a fit"
