#!/usr/bin/env bash
# Model parity with River: the quickstart topology and ../shared/peers/river_pipeline.py
# on the same generated stream, both scored by ../shared/peers/eval_outputs.py.
#
#   benches/river_parity.sh                 # 1M rows, seed 7, --no-faults
#   ROWS=200000 FAULTS= benches/river_parity.sh
#
# Installs River 0.26.1 (and duckdb, to export the scored table in input order)
# into a venv under ~/.cache/millrace on first use. River takes about a minute
# per million rows here.
set -euo pipefail
rows=${ROWS:-1000000}
seed=${SEED:-7}
faults=${FAULTS---no-faults}
repo=$(cd "$(dirname "$0")/.." && pwd)
shared=$repo/../shared
work=${WORK:-$(mktemp -d)}
venv=${VENV:-$HOME/.cache/millrace/venv-river}
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import river, duckdb, scipy' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q river==0.26.1 numpy scipy duckdb
fi
(cd "$repo" && cargo build --release -q)
mkdir -p "$work/landing"
python3 "$shared/data/gen_transactions.py" --rows "$rows" --seed "$seed" $faults --truth "$work/truth.json" > "$work/landing/tx.csv"
touch -d '1 minute ago' "$work/landing/tx.csv"
echo "== River (PYTHONHASHSEED=0 fixes River's feature summation order)"
PYTHONHASHSEED=0 "$venv/bin/python" "$shared/peers/river_pipeline.py" "$work/landing/tx.csv" "$work/river_out.csv" "$work/river_summary.json"
echo "== millrace"
(cd "$work" && "$repo/target/release/millrace" run "$repo/topologies/quickstart.toml" --once)
"$venv/bin/python" - "$work" <<'PY'
import sys, duckdb
work = sys.argv[1]
duckdb.sql(f"""copy (select key, epoch_ms(event_time), score, label
                     from read_parquet('{work}/lake/scored/**/*.parquet', hive_partitioning=true)
                     order by source, line) to '{work}/millrace_out.csv' (header false)""")
PY
echo "== eval_outputs.py (reference: River)"
"$venv/bin/python" "$shared/peers/eval_outputs.py" "$work/truth.json" "$work/river_out.csv" "$work/millrace_out.csv" > "$work/eval.json"
"$venv/bin/python" - "$work/eval.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
for path, r in d.items():
    name = "river   " if path.endswith("river_out.csv") else "millrace"
    a = r["all"]
    print(f"{name} n={a['n']} accuracy={a['acc']:.5f} log_loss={a['logloss']:.5f} auc={a['auc']:.5f}"
          f" auc_before_drift={r['before_drift']['auc']:.5f} auc_after_drift={r['after_drift']['auc']:.5f}"
          + ("" if r["vs_ref"] == "reference" else f"  vs River: {r['vs_ref']}"))
PY
echo "work folder: $work"
