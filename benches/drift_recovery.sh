#!/usr/bin/env bash
# How fast each learner is back after the reference stream's concept drift:
# ROC AUC per window of records, so a learner that recovers from the drift
# point faster than logistic regression shows it window by window.
#
#   benches/drift_recovery.sh                   # 1M rows with faults, ~2 minutes
#   ROWS=200000 GEN="--no-faults" benches/drift_recovery.sh
#   KINDS="logistic_regression model_trees" NO_BUILD=1 benches/drift_recovery.sh
#
# Generates the stream with `millrace gen` (its drift at 60% of the rows: half
# of the true model's weights change sign), runs the quickstart once per
# learner on one worker, and prints the ROC AUC of every window of WINDOW input
# lines from the drift's line on, with the whole-run AUC and the wall time.
# Learners: logistic_regression, hoeffding_tree, adaptive_random_forest, and
# model_trees (the forest with `leaf_prediction = "logistic"`).
set -euo pipefail
rows=${ROWS:-1000000}
window=${WINDOW:-2000}
kinds=${KINDS:-logistic_regression hoeffding_tree adaptive_random_forest model_trees}
work=${WORK:-$(mktemp -d)}
source "$(dirname "$0")/river_env.sh"   # duckdb and scipy in a venv, and the binary
millrace=$repo/target/release/millrace
cd "$work"
mkdir -p landing
"$millrace" gen --rows "$rows" --seed 7 ${GEN:-} --out landing/tx.csv --truth truth.json > /dev/null
touch -d '1 minute ago' landing/tx.csv
# The drift's line: the first line (header = line 1) at or after the drift's event time.
drift_ms=$("$venv/bin/python" -c 'import json; print(json.load(open("truth.json"))["drift_at_ms"])')
drift_line=$(awk -F, -v t="$drift_ms" 'NR > 1 && $1 + 0 >= t { print NR; exit }' landing/tx.csv)
for kind in $kinds; do
  model="kind = \"$kind\""
  [ "$kind" = model_trees ] && model='kind = "adaptive_random_forest"
leaf_prediction = "logistic"'
  # The quickstart with this learner, no report.
  "$venv/bin/python" - "$repo/topologies/quickstart.toml" "$model" > "$kind.toml" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
text = re.sub(r'\n\[model\]\n(?:[^\[\n][^\n]*\n|\n)*', "\n[model]\n" + sys.argv[2] + "\n\n", text, count=1)
print(re.sub(r'\n\[report\]\n(?:[^\[\n][^\n]*\n|\n)*', "\n", text))
PY
  rm -rf "lake-$kind"
  /usr/bin/time -f "%e %M" -o "time-$kind" "$millrace" run "$kind.toml" --once --landing landing --lake "lake-$kind" > "out-$kind.txt" 2> "err-$kind.txt"
done
"$venv/bin/python" - "$drift_line" "$window" $kinds <<'PY'
import sys, duckdb, numpy as np
from scipy.stats import rankdata
drift, window, kinds = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
def auc(p, y):
    n1 = y.sum(); n0 = len(y) - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    r = rankdata(p)
    return (r[y == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0)
ks = range(-2, 8)
print(f"drift at line {drift}; windows of {window} lines (k = 0: the first after the drift)\n")
print("| learner | AUC, whole run | " + " | ".join(f"k = {k}" for k in ks) + " | seconds | peak MB |")
print("|---|---|" + "---|" * len(ks) + "---|---|")
for kind in kinds:
    a = np.array(duckdb.sql(f"select score, label, line from read_parquet('lake-{kind}/scored/**/*.parquet', hive_partitioning=false) where label is not null").fetchall(), dtype=float)
    row = []
    for k in ks:
        m = (a[:, 2] >= drift + k * window) & (a[:, 2] < drift + (k + 1) * window)
        row.append(f"{auc(a[m, 0], a[m, 1]):.3f}")
    secs, kb = open(f"time-{kind}").read().split()
    print(f"| {kind} | {auc(a[:, 0], a[:, 1]):.5f} | " + " | ".join(row) + f" | {secs} | {int(kb) // 1024} |")
PY
echo "work folder: $work"
