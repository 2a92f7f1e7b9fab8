#!/usr/bin/env bash
# Aggregator ingest benchmark: a release aggregator on a fresh SQLite file (or ClickHouse database),
# 50 registered sensors, darkscope-ingest-bench posting zstd summaries of
# 1,000 sources each with 16 concurrent connections over loopback.
# Usage: [CONC=16] [FORMAT=binary|json] [CLICKHOUSE=URL] bash benches/ingest.sh [SUMMARIES]
#   (default 4000 summaries; CONC = connections; FORMAT = body form, binary
#   as sensors send by default; CLICKHOUSE = store into a fresh database on
#   that ClickHouse server instead of SQLite, e.g. one from benches/clickhouse.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-4000}
OUT=benches/out/ingest; rm -rf "$OUT"; mkdir -p "$OUT/tokens"
cargo build --release -q -p darkscope-aggregator -p darkscope-benches
AGG=./target/release/darkscope-aggregator
# Raw ingest capacity: the per-credential rate limit is off for the benchmark.
if [ -n "${CLICKHOUSE:-}" ]; then
  printf 'storage = "clickhouse"\n[clickhouse]\nurl = "%s"\ndatabase = "ingest_%s"\n' "$CLICKHOUSE" "$(date +%s)" > "$OUT/bench.toml"
  $AGG --config "$OUT/bench.toml" migrate >/dev/null
else
  printf 'database = "%s"\n' "$OUT/bench.db" > "$OUT/bench.toml"
fi
printf '[limits]\nrequests_per_minute = 0\n' >> "$OUT/bench.toml"
for i in $(seq -w 1 50); do $AGG --config "$OUT/bench.toml" sensor add --id "bench-$i" --country JP > "$OUT/tokens/bench-$i.token" 2>/dev/null; done
PORT=18$(( RANDOM % 900 + 100 ))
RUST_LOG=warn $AGG --config "$OUT/bench.toml" serve --listen 127.0.0.1:$PORT & PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf http://127.0.0.1:$PORT/healthz >/dev/null && break; sleep 0.1; done
echo "| form | summaries | sources each | connections | summaries/s | p50 ms | p99 ms | max ms | failures |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
./target/release/darkscope-ingest-bench --url http://127.0.0.1:$PORT --tokens "$OUT/tokens" --summaries "$N" --sources 1000 --ports 100 --concurrency ${CONC:-16} --format ${FORMAT:-binary}
