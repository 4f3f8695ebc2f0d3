# Sourced by the River comparison scripts (river_parity.sh, drift_streams.sh):
# River 0.26.1 with duckdb and scipy in a venv under ~/.cache/millrace (or
# $VENV), installed on first use; then the release binary, built unless
# NO_BUILD=1 says to use it as it is. Sets `repo` and `venv`.
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${VENV:-$HOME/.cache/millrace/venv-river}
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import river, duckdb, scipy' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q river==0.26.1 numpy scipy duckdb
fi
[ -n "${NO_BUILD:-}" ] || (cd "$repo" && cargo build --release -q)
