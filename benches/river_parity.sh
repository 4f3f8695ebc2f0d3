#!/usr/bin/env bash
# Model parity with River: the quickstart topology and ../shared/peers/river_pipeline.py
# on the same generated stream, both scored by ../shared/peers/eval_outputs.py.
#
#   benches/river_parity.sh                 # 1M rows, seed 7, --no-faults
#   ROWS=200000 FAULTS= benches/river_parity.sh
#   MODEL=ftrl benches/river_parity.sh      # FTRL-Proximal on both sides
#   MODEL=hoeffding_tree benches/river_parity.sh   # River's HoeffdingTreeClassifier vs millrace's
#   ROWS=200000 MODEL=adaptive_random_forest benches/river_parity.sh   # River's ARFClassifier (~10 min per 200k rows) vs millrace's
#
# Installs River 0.26.1 (and duckdb, to export the scored table in input order)
# into a venv under ~/.cache/millrace on first use. River takes about a minute
# per million rows here.
set -euo pipefail
rows=${ROWS:-1000000}
seed=${SEED:-7}
faults=${FAULTS---no-faults}
work=${WORK:-$(mktemp -d)}
source "$(dirname "$0")/river_env.sh"   # the venv, and the binary (NO_BUILD=1: as built)
shared=$repo/../shared
mkdir -p "$work/landing"
python3 "$shared/data/gen_transactions.py" --rows "$rows" --seed "$seed" $faults --truth "$work/truth.json" > "$work/landing/tx.csv"
touch -d '1 minute ago' "$work/landing/tx.csv"
model=${MODEL:-logistic_regression}
echo "== River, $model (PYTHONHASHSEED=0 fixes River's feature summation order)"
# The peer's pipeline with its learner swapped for River's equivalent of $model.
PYTHONHASHSEED=0 MODEL=$model PYTHONPATH="$shared/peers" "$venv/bin/python" - "$work/landing/tx.csv" "$work/river_out.csv" "$work/river_summary.json" <<'PY'
import os, sys, runpy
import pipeline_common
model = os.environ["MODEL"]
if model != "logistic_regression":
    def build_model():
        from river import compose, forest, linear_model, optim, preprocessing, tree
        num = compose.Select(*pipeline_common.NUM_FEATS) | preprocessing.StandardScaler()
        cat = compose.Select("category") | preprocessing.OneHotEncoder()
        class Proba:
            # An empty or one-class answer (before the first split) as a full distribution.
            def predict_proba_one(self, x, **kw):
                p = super().predict_proba_one(x, **kw)
                t, f = p.get(True, 0.0), p.get(False, 0.0)
                return {True: t / (t + f), False: f / (t + f)} if t + f > 0 else {True: 0.5, False: 0.5}
        if model == "ftrl":
            learner = linear_model.LogisticRegression(
                optimizer=optim.FTRLProximal(alpha=0.1, beta=1.0, l1=0.0, l2=0.0), intercept_lr=0.0)
        elif model == "hoeffding_tree":
            class Tree(Proba, tree.HoeffdingTreeClassifier): pass
            learner = Tree(grace_period=200, delta=1e-7)
        elif model == "adaptive_random_forest":
            # River's defaults (10 trees, λ 6, grace 50, δ 0.01, ADWIN 0.01 / 0.001) but MOA's subspace, ⌊√m⌋ + 1, as millrace's.
            import math
            class Forest(Proba, forest.ARFClassifier): pass
            learner = Forest(n_models=10, max_features=int(math.sqrt(len(pipeline_common.NUM_FEATS) + 10)) + 1, seed=1)  # 10 categories
        else:
            raise SystemExit(f"unknown MODEL {model}")
        return (num + cat) | learner
    pipeline_common.build_model = build_model
sys.argv = ["river_pipeline.py"] + sys.argv[1:]
runpy.run_path(os.path.join(os.path.dirname(pipeline_common.__file__), "river_pipeline.py"), run_name="__main__")
PY
echo "== millrace, $model"
sed "s/^kind = \"logistic_regression\"/kind = \"$model\"/" "$repo/topologies/quickstart.toml" \
  | { if [ "$model" = logistic_regression ]; then cat; else sed '/^learning_rate = /d'; fi; } > "$work/topology.toml"
(cd "$work" && "$repo/target/release/millrace" run topology.toml --once)
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
