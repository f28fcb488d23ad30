#!/usr/bin/env bash
# `nats fit` end to end: on a generated CSV (IsoFLOP profiles of a known law at 4 budgets, dense and NAtS rows,
# one failed run) it prints the report and writes fit.json with every key of the schema (docs/scaling.md,
# "Fitting"; checked with python3's json); a seed gives the same intervals twice; --budgets sets the allocation
# rows; without kv / budget columns those sections are null and the report says why; bad CSVs exit 1 with one
# line on stderr naming the file; usage errors exit 2; --help / -h exit 0 with the help on stdout.
# usage: fit_cli_test.sh NATS_BINARY
set -uo pipefail
NATS=$(realpath "$1")
export NATS
WORK=$(mktemp -d /tmp/nats_fit_cli.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
failures=0
fail() {
  echo "FAIL $*"
  failures=$((failures + 1))
}
ok() { echo "ok   $*"; }

# 4 budgets x 5 N x {dense, kv 0.5, kv 0.25} of L = 2.1 + 400/N^0.5 + 1000/D^0.4 + 0.1 (1-kv)^1.5, noise 0.5 %.
python3 - "$WORK" <<'PY'
import math, random, sys
random.seed(0)
work = sys.argv[1]
E, A, B, a, b = 2.1, 400.0, 1000.0, 0.5, 0.4
lines = ["params,tokens,loss,status,kv_fraction,attention,budget_flops,note"]
for C in [1e15, 1e16, 1e17, 1e18]:
    G = (a * A / (b * B)) ** (1 / (a + b))
    n0 = G * (C / 6) ** (b / (a + b))
    for k in range(-2, 3):
        n = n0 * 10 ** (0.3 * k)
        d = C / (6 * n)
        for kv in [1.0, 0.5, 0.25]:
            loss = (E + A / n**a + B / d**b + (0.1 * (1 - kv) ** 1.5 if kv < 1 else 0)) * math.exp(random.gauss(0, 0.005))
            dense = kv == 1.0
            lines.append(f"{n:.6g},{d:.6g},{loss:.6g},ok,{'' if dense else kv},{'DENSE' if dense else 'NATS'},{C:g},\"a, quoted note\"")
lines.append("1e6,1e8,,failed,,DENSE,1e15,crashed")
open(f"{work}/results.csv", "w").write("\n".join(lines) + "\n")
# The same rows without kv / budget columns, and published-style column names.
with open(f"{work}/plain.csv", "w") as f:
    f.write("N,D,final_loss\n")
    for line in lines[1:-1]:
        p, t, l = line.split(",")[:3]
        f.write(f"{p},{t},{l}\n")
PY

# 1. The full CSV: report, fit.json next to it, every schema key.
"$NATS" fit "$WORK/results.csv" --bootstrap 10 >"$WORK/report" 2>"$WORK/err"
rc=$?
if [ "$rc" -ne 0 ]; then
  fail "nats fit results.csv: exit $rc: $(head -3 "$WORK/err")"
else
  missing=""
  for want in "61 rows read, 60 used, 1 skipped (line 62: status failed)" "Approach 3" "95% interval" \
      "Compute-optimal allocation (C = 6 N D)" "Chinchilla" "Approach 2 (IsoFLOP" "N_opt = " "KV-fraction fit" \
      "gamma" "Timings:" "wrote $WORK/fit.json"; do
    grep -qF -- "$want" "$WORK/report" || missing="$missing '$want'"
  done
  [ -z "$missing" ] && ok "report has every section" || { fail "report lacks$missing"; cat "$WORK/report"; }
fi
python3 - "$WORK/fit.json" "$WORK/results.csv" <<'PY' && ok "fit.json has the schema's keys and plausible values" || fail "fit.json schema"
import json, sys
j = json.load(open(sys.argv[1]))
def keys(obj, want, where):
    missing = set(want) - set(obj)
    extra = set(obj) - set(want)
    assert not missing and not extra, f"{where}: missing {missing}, extra {extra}"
keys(j, ["input", "columns", "rows_read", "rows_used", "rows_skipped", "law_rows", "approach3", "approach2", "kv", "chinchilla"], "top")
assert j["input"] == sys.argv[2], j["input"]
assert j["columns"] == {"params": "params", "tokens": "tokens", "loss": "loss", "kv": "kv_fraction", "budget": "budget_flops"}, j["columns"]
assert (j["rows_read"], j["rows_used"]) == (61, 60) and j["rows_skipped"] == [{"line": 62, "reason": "status failed"}]
a3 = j["approach3"]
laws = ["E", "A", "B", "alpha", "beta"]
keys(a3, ["form", *laws, "ci95", "huber_delta", "objective", "starts", "lbfgs_starts", "bootstrap", "seconds",
          "n_exponent", "d_exponent", "allocation"], "approach3")
keys(a3["ci95"], laws, "approach3.ci95")
assert a3["starts"] == 4500 and a3["lbfgs_starts"] == 32 and a3["bootstrap"] == 10 and a3["huber_delta"] == 0.001
assert abs(a3["alpha"] - 0.5) < 0.1 and abs(a3["beta"] - 0.4) < 0.1, (a3["alpha"], a3["beta"])
for name in laws:
    lo, hi = a3["ci95"][name]
    assert lo <= hi, name
flops = [a["flops"] for a in a3["allocation"]]
assert flops == [1e15, 1e16, 1e17, 1e18, 1e21, 5.76e23], flops  # the budgets, then Chinchilla's
for a in a3["allocation"]:
    keys(a, ["flops", "n_opt", "d_opt", "tokens_per_param", "tokens_per_param_ci95", "loss"], "allocation")
    assert abs(6 * a["n_opt"] * a["d_opt"] / a["flops"] - 1) < 1e-9
a2 = j["approach2"]
keys(a2, ["budgets", "n_opt_law", "d_opt_law"], "approach2")
assert len(a2["budgets"]) == 4
for b in a2["budgets"]:
    keys(b, ["flops", "points", "parabola", "n_opt", "d_opt", "loss_min", "used", "note"], "approach2.budgets")
    assert len(b["parabola"]) == 3 and b["points"] == 5  # the DENSE rows (--law_rows default)
keys(a2["n_opt_law"], ["coefficient", "exponent"], "n_opt_law")
assert abs(a2["n_opt_law"]["exponent"] - 0.4 / 0.9) < 0.05, a2["n_opt_law"]
kv = j["kv"]
keys(kv, ["form", *laws, "K", "gamma", "ci95", "objective", "frontier"], "kv")
keys(kv["ci95"], laws + ["K", "gamma"], "kv.ci95")
assert abs(kv["K"] - 0.1) < 0.03, kv["K"]
assert len(kv["frontier"]) == 6
for f in kv["frontier"]:
    keys(f, ["flops", "kv", "loss"], "frontier")
    assert len(f["kv"]) == len(f["loss"]) == 20 and f["kv"][0] == 0.05 and f["kv"][-1] == 1.0
c = j["chinchilla"]
keys(c, [*laws, "allocation"], "chinchilla")
assert (c["E"], c["A"], c["B"], c["alpha"], c["beta"]) == (1.69, 406.4, 410.7, 0.34, 0.28)
for a in c["allocation"]:
    keys(a, ["flops", "n_opt", "d_opt", "tokens_per_param", "loss"], "chinchilla.allocation")
PY

# 2. A seed gives the same intervals; --out and --budgets.
"$NATS" fit "$WORK/results.csv" --bootstrap 10 --out "$WORK/again.json" --budgets 1e17,1e21 >/dev/null 2>&1
python3 - "$WORK/fit.json" "$WORK/again.json" <<'PY' && ok "--seed 0 twice: same intervals; --out, --budgets" || fail "same seed or --budgets"
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:])
assert a["approach3"]["ci95"] == b["approach3"]["ci95"] and a["kv"]["ci95"] == b["kv"]["ci95"]
assert [x["flops"] for x in b["approach3"]["allocation"]] == [1e17, 1e21]
assert [x["flops"] for x in b["kv"]["frontier"]] == [1e17, 1e21]
PY
"$NATS" fit "$WORK/results.csv" --bootstrap=10 --seed=1 --out="$WORK/seed1.json" >/dev/null 2>&1
python3 -c "import json,sys; a,b=(json.load(open(p)) for p in sys.argv[1:]); assert a['approach3']['ci95'] != b['approach3']['ci95']" \
  "$WORK/fit.json" "$WORK/seed1.json" && ok "--seed 1: other intervals" || fail "--seed 1 gave the same intervals"

# 2b. Law rows: by default Approaches 3 and 2 fit the DENSE rows (20 of 60) and the KV fit every row;
#     --law_rows all fits all 60 (whose NAtS rows carry the K term, so the fit differs); a missing column exits 1.
python3 - "$WORK" <<'PY' && ok "--law_rows: dense by default, all on request" || fail "--law_rows"
import json, subprocess, sys
work = sys.argv[1]
import os
nats = os.environ["NATS"]
subprocess.run([nats, "fit", f"{work}/results.csv", "--bootstrap", "0", "--out", f"{work}/dense.json"], check=True, capture_output=True)
subprocess.run([nats, "fit", f"{work}/results.csv", "--bootstrap", "0", "--out", f"{work}/all.json", "--law_rows", "all"], check=True, capture_output=True)
dense, every = json.load(open(f"{work}/dense.json")), json.load(open(f"{work}/all.json"))
assert dense["law_rows"] == {"filter": "attention=DENSE", "rows": 20}, dense["law_rows"]
assert every["law_rows"] == {"filter": "all", "rows": 60}, every["law_rows"]
assert dense["approach3"]["E"] != every["approach3"]["E"]
assert abs(dense["approach3"]["alpha"] - 0.5) < 0.05, dense["approach3"]["alpha"]
bad = subprocess.run([nats, "fit", f"{work}/results.csv", "--bootstrap", "0", "--law_rows", "kind=x"], capture_output=True, text=True)
assert bad.returncode == 1 and "no column 'kind'" in bad.stderr, (bad.returncode, bad.stderr)
PY

# 3. Renamed columns, no kv / budget columns: those sections are null and the report says why.
"$NATS" fit "$WORK/plain.csv" --params N --tokens D --loss final_loss --bootstrap 0 >"$WORK/report_plain" 2>"$WORK/err"
rc=$?
if [ "$rc" -eq 0 ] && grep -q "Approach 2 (IsoFLOP): skipped: no 'budget_flops' or 'flops' column" "$WORK/report_plain" &&
   grep -q "KV-fraction fit: skipped: no 'kv_fraction' column" "$WORK/report_plain" &&
   python3 -c "import json,sys; j=json.load(open(sys.argv[1])); assert j['approach2'] is None and j['kv'] is None and j['columns']['kv'] is None and j['columns']['budget'] is None and j['columns']['params']=='N'; assert j['approach3']['ci95']['E']==[None,None]" "$WORK/fit.json"; then
  ok "--params/--tokens/--loss, no kv/budget columns: null sections with reasons"
else
  fail "plain CSV: exit $rc: $(head -2 "$WORK/err")"; cat "$WORK/report_plain"
fi

# 4. Bad CSVs: exit 1, one line on stderr naming the file (and line and column where there is one).
bad() {
  local name=$1 content=$2 want=$3
  printf '%b' "$content" >"$WORK/$name.csv"
  "$NATS" fit "$WORK/$name.csv" --bootstrap 0 >/dev/null 2>"$WORK/err"
  local rc=$?
  if [ "$rc" -eq 1 ] && [ "$(wc -l <"$WORK/err")" -eq 1 ] && grep -qF -- "$WORK/$name.csv" "$WORK/err" &&
     grep -qF -- "$want" "$WORK/err"; then
    ok "$name: exit 1, $(cat "$WORK/err")"
  else
    fail "$name: exit $rc (want 1), stderr: $(cat "$WORK/err") (want one line with '$want')"
  fi
}
bad missing_column 'params,tokens,val\n1e6,1e8,3\n' "no column 'loss' (columns: params, tokens, val)"
bad not_a_number 'params,tokens,loss\n1e6,1e8,3\n2e6,two,3\n' "csv:3: column 'tokens': 'two' is not a number"
bad negative 'params,tokens,loss\n1e6,1e8,-3\n' "csv:2: column 'loss': '-3' is not positive"
bad too_few 'params,tokens,loss,status\n1e6,1e8,3,ok\n2e6,1e8,2.9,ok\n3e6,1e8,2.8,failed\n' "2 usable rows"
bad ragged 'params,tokens,loss\n1e6,1e8\n' "csv:2: 2 fields, but the header has 3"
"$NATS" fit "$WORK/nonexistent.csv" >/dev/null 2>"$WORK/err"
rc=$?
[ "$rc" -eq 1 ] && grep -q "nonexistent.csv: cannot open" "$WORK/err" && ok "missing file: exit 1" ||
  fail "missing file: exit $rc, $(cat "$WORK/err")"

# 5. Usage errors exit 2; --help / -h exit 0 with the help on stdout.
for args in "" "--bootstrap abc $WORK/results.csv" "--budgets 1e18,zero $WORK/results.csv" "--no_such_flag $WORK/results.csv" \
    "$WORK/results.csv $WORK/plain.csv" "--huber_delta -1 $WORK/results.csv"; do
  # shellcheck disable=SC2086
  "$NATS" fit $args >/dev/null 2>"$WORK/err"
  rc=$?
  [ "$rc" -eq 2 ] && [ -s "$WORK/err" ] && ok "fit $args: exit 2" || fail "fit $args: exit $rc (want 2)"
done
for spelling in --help -h; do
  "$NATS" fit "$spelling" >"$WORK/help" 2>"$WORK/err"
  rc=$?
  [ "$rc" -eq 0 ] && grep -q -- "--bootstrap N" "$WORK/help" && [ ! -s "$WORK/err" ] && ok "fit $spelling" ||
    fail "fit $spelling: exit $rc or help not on stdout"
done

[ "$failures" -eq 0 ] && echo "all passed" || echo "$failures failure(s)"
[ "$failures" -eq 0 ]
