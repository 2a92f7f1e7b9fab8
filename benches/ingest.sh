#!/usr/bin/env bash
# Aggregator ingest benchmark: a release aggregator on a fresh SQLite file,
# 50 registered sensors, darkscope-ingest-bench posting zstd summaries of
# 1,000 sources each with 16 concurrent connections over loopback.
# Usage: [CONC=16] [FORMAT=binary|json] bash benches/ingest.sh [SUMMARIES]
#   (default 4000 summaries; CONC = connections; FORMAT = body form, binary
#   as sensors send by default)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-4000}
OUT=benches/out/ingest; rm -rf "$OUT"; mkdir -p "$OUT/tokens"
cargo build --release -q -p darkscope-aggregator -p darkscope-benches
AGG=./target/release/darkscope-aggregator
for i in $(seq -w 1 50); do $AGG --database "$OUT/bench.db" sensor add --id "bench-$i" --country JP > "$OUT/tokens/bench-$i.token" 2>/dev/null; done
PORT=18$(( RANDOM % 900 + 100 ))
# Raw ingest capacity: the per-credential rate limit is off for the benchmark.
printf '[limits]\nrequests_per_minute = 0\n' > "$OUT/bench.toml"
RUST_LOG=warn $AGG --config "$OUT/bench.toml" --database "$OUT/bench.db" serve --listen 127.0.0.1:$PORT & PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf http://127.0.0.1:$PORT/healthz >/dev/null && break; sleep 0.1; done
echo "| form | summaries | sources each | connections | summaries/s | p50 ms | p99 ms | max ms | failures |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
./target/release/darkscope-ingest-bench --url http://127.0.0.1:$PORT --tokens "$OUT/tokens" --summaries "$N" --sources 1000 --ports 100 --concurrency ${CONC:-16} --format ${FORMAT:-binary}
