#!/usr/bin/env bash
# Feed matching at ingest with many subscriptions (issue: feeds).
# 1. darkscope-feed-bench: trie build time and matching cost per source with
#    100,000 subscription prefixes over 1,000 subscribers.
# 2. Ingest end to end, back to back in the same run: benches/ingest.sh's
#    load (zstd summaries of 1,000 random sources, 16 connections) into a
#    release aggregator on a fresh SQLite file, without subscriptions and
#    with the 100,000 prefixes registered.
# Usage: bash benches/feeds.sh [SUMMARIES]   (default 2000)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-2000}
cargo build --release -q -p darkscope-aggregator -p darkscope-benches
echo "## matching alone"
./target/release/darkscope-feed-bench --prefixes 100000 --subscribers 1000
AGG=./target/release/darkscope-aggregator
run() { # $1: label, $2: prefixes (0 = none)
  local OUT=benches/out/feeds-$2; rm -rf "$OUT"; mkdir -p "$OUT/tokens"
  for i in $(seq -w 1 50); do $AGG --database "$OUT/bench.db" sensor add --id "bench-$i" --country JP > "$OUT/tokens/bench-$i.token" 2>/dev/null; done
  if [ "$2" -gt 0 ]; then ./target/release/darkscope-feed-bench --prefixes "$2" --subscribers 1000 --register "$OUT/bench.db"; fi
  local PORT=18$(( RANDOM % 900 + 100 ))
  printf '[limits]\nrequests_per_minute = 0\n' > "$OUT/bench.toml"
  RUST_LOG=warn $AGG --config "$OUT/bench.toml" --database "$OUT/bench.db" serve --listen 127.0.0.1:$PORT & local PID=$!
  for _ in $(seq 100); do curl -sf http://127.0.0.1:$PORT/healthz >/dev/null && break; sleep 0.1; done
  echo "## ingest, $1"
  ./target/release/darkscope-ingest-bench --url http://127.0.0.1:$PORT --tokens "$OUT/tokens" --summaries "$N" --sources 1000 --ports 100 --concurrency 16
  curl -s http://127.0.0.1:$PORT/metrics | grep -E '^darkscope_aggregator_(feed_events|summaries_stored)_total'
  kill $PID; wait $PID 2>/dev/null || true
}
run "no subscriptions" 0
run "100,000 subscription prefixes" 100000
[ "${FEEDS_BENCH_CONTROL:-}" = 1 ] && run "no subscriptions (after)" 0
