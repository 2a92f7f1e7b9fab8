#!/usr/bin/env bash
# Load test (issue: reliability): 1,000 sensors uploading one window per
# simulated minute, analysts querying and feed subscribers polling, against
# one release aggregator on a fresh SQLite file on loopback, for a bounded
# number of simulated minutes; default request limits on.
# Usage: [SPLAY=5] bash benches/load.sh [MINUTES] [SECONDS_PER_MINUTE] [SENSORS]   (default 10 6 1000)
# SPLAY: each sensor's upload delay after its window closes, 0 to SPLAY
# simulated seconds (the sensor's default splay_secs is 5; 0 = all at once).
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES=${1:-10}; PACE=${2:-6}; SENSORS=${3:-1000}
OUT=benches/out/load; rm -rf "$OUT"; mkdir -p "$OUT/tokens" "$OUT/subscribers"
cargo build --release -q -p darkscope-aggregator -p darkscope-benches
AGG=./target/release/darkscope-aggregator
echo "registering $SENSORS sensors and 20 subscribers (10,000 prefixes)…" >&2
for i in $(seq -w 1 "$SENSORS"); do $AGG --database "$OUT/load.db" sensor add --id "s-$i" --country JP > "$OUT/tokens/s-$i.token" 2>/dev/null; done
./target/release/darkscope-feed-bench --prefixes 10000 --subscribers 20 --register "$OUT/load.db" --tokens-out "$OUT/subscribers" >&2
PORT=18$(( RANDOM % 900 + 100 ))
RUST_LOG=warn $AGG --database "$OUT/load.db" serve --listen 127.0.0.1:$PORT & PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf http://127.0.0.1:$PORT/healthz >/dev/null && break; sleep 0.1; done
./target/release/darkscope-load --url http://127.0.0.1:$PORT --tokens "$OUT/tokens" \
  --subscriber-tokens "$OUT/subscribers" --minutes "$MINUTES" --minute-secs "$PACE" --splay "${SPLAY:-5}" --pid $PID
