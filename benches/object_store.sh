#!/usr/bin/env bash
# The quickstart written to a local lake, to Azurite and to moto's S3 server,
# in one run: wall time, records/s and commits (epochs) per second of each;
# then `millrace compact` of each lake: parts before and files after, and
# its wall time.
#
#   benches/object_store.sh [ROWS]        # default 1000000
#
# Builds the release binary (or takes MILLRACE_BIN), generates ROWS rows (seed 7) into a scratch
# folder, starts both emulators on loopback (.ci/storage/emulator; stopped
# when this script exits) and runs `millrace run topologies/quickstart.toml
# --once` once per lake. The emulators run on the same 2 cores as the job.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$(pwd)"
emulator="$repo/.ci/storage/emulator"
rows="${1:-1000000}"
target="${CARGO_TARGET_DIR:-target}"
if [ -n "${MILLRACE_BIN:-}" ]; then
  bin="$(cd "$(dirname "$MILLRACE_BIN")" && pwd)/$(basename "$MILLRACE_BIN")"
else
  cargo build --release --quiet
  bin="$(cd "$target/release" && pwd)/millrace"
fi
work="$(mktemp -d "${TMPDIR:-/tmp}/millrace-bench-objstore.XXXXXX")"
trap '"$emulator" stop --dir "$work/az"; "$emulator" stop --dir "$work/s3"; rm -rf "$work"' EXIT
az="$("$emulator" start azurite --dir "$work/az" --bucket lake --owner $$)"
s3="$("$emulator" start s3 --dir "$work/s3" --bucket lake --owner $$)"
export AZURE_STORAGE_USE_EMULATOR=true AZURITE_BLOB_STORAGE_URL="${az%/devstoreaccount1}"
export AWS_ENDPOINT="$s3" AWS_ALLOW_HTTP=true AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1
cd "$work"
"$bin" gen --rows "$rows" --seed 7 --out landing/tx.csv >/dev/null
touch -d '-1 minute' landing/tx.csv
topology="$repo/topologies/quickstart.toml"
printf '%-22s %9s %12s %10s %9s\n' lake seconds records/s epochs epochs/s
for lake in "$work/local" az://lake/bench s3://lake/bench; do
  start=$(date +%s.%N)
  out="$("$bin" run "$topology" --once --landing landing --lake "$lake" 2>>"$work/runs.log")"
  end=$(date +%s.%N)
  # One checkpoint (a create-only commit record) per epoch: "run: 1 file(s), N epoch(s), ...".
  epochs="$(printf '%s\n' "$out" | sed -n 's/^run: .* \([0-9][0-9]*\) epoch(s).*/\1/p')"
  awk -v l="${lake#$work/}" -v s="$start" -v e="$end" -v r="$rows" -v n="$epochs" \
    'BEGIN { t = e - s; printf "%-22s %9.2f %12.0f %10d %9.1f\n", l, t, r / t, n, n / t }'
done
printf '\n%-22s %9s %12s %9s\n' lake parts files seconds
for lake in "$work/local" az://lake/bench s3://lake/bench; do
  start=$(date +%s.%N)
  # "LAKE: N partitions compacted: P files → F (R rows); D replaced files deleted"
  out="$("$bin" compact "$lake" --grace-ms 0 2>>"$work/runs.log")"
  end=$(date +%s.%N)
  parts="$(printf '%s\n' "$out" | sed -n 's/.*compacted: \([0-9]*\) files → \([0-9]*\) .*/\1 \2/p')"
  awk -v l="${lake#$work/}" -v s="$start" -v e="$end" -v p="$parts" \
    'BEGIN { split(p, f, " "); printf "%-22s %9d %12d %9.2f\n", l, f[1], f[2], e - s }'
done
