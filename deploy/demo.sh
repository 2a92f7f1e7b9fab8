#!/usr/bin/env bash
# The main job on embedded defaults: builds darkscope, starts the aggregator
# on SQLite (127.0.0.1:8080, demo-out/darkscope.db), registers a sensor,
# replays the real scanner captures in testdata/realscan through the sensor
# into it over HTTP, prints what it stored and where to look (the analysts'
# console in a browser, the JSON API), and keeps the aggregator running until
# Ctrl-C (DEMO_EXIT=1: stop after printing).
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/setup.sh
echo "demo: building (release)…"
cargo build --release -q -p darkscope-sensor -p darkscope-aggregator
OUT=${DEMO_OUT:-demo-out}
LISTEN=${DEMO_LISTEN:-127.0.0.1:8080}
URL="http://$LISTEN"
# A fresh demo each run: the replay takes seconds.
rm -rf "$OUT"
mkdir -p "$OUT"
AGG=./target/release/darkscope-aggregator
SENSOR=./target/release/darkscope-sensor
DB="$OUT/darkscope.db"

$AGG --database "$DB" sensor add --id demo-1 --country JP > "$OUT/demo-1.token"
$AGG --database "$DB" serve --listen "$LISTEN" > "$OUT/aggregator.log" 2>&1 &
AGG_PID=$!
trap 'kill $AGG_PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf "$URL/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
curl -sf "$URL/healthz" >/dev/null || { echo "demo: aggregator did not start; see $OUT/aggregator.log"; cat "$OUT/aggregator.log"; exit 1; }

echo "demo: sensor demo-1 replays testdata/realscan/all-small.pcap (masscan, zmap, nmap, hping3) into $URL"
$SENSOR --read testdata/realscan/all-small.pcap --darknet 198.19.0.0/16,2001:db8:dead::/48 \
  --id demo-1 --country JP --window 60 --out "$OUT/summaries.jsonl" \
  --aggregator "$URL" --token-file "$OUT/demo-1.token" --spool "$OUT/spool"

RANGE="from=2026-11-21T00:00:00Z&to=2026-11-23T00:00:00Z"
python3 - "$URL" "$RANGE" <<'PY'
import json, sys, urllib.request
url, rng = sys.argv[1], sys.argv[2]
get = lambda p: json.load(urllib.request.urlopen(url + p))
o = get(f"/api/v1/overview?{rng}")
print(f"\nstored: {o['windows']} windows, {o['packets']} packets from {o['active_sensors']} sensor(s)")
print("classes:", ", ".join(f"{k}={v}" for k, v in o["classes"].items() if v))
print("top ports by distinct sources:", ", ".join(f"{p['proto']}/{p['port']} ({p['sources']} src, {p['packets']} pkts)" for p in o["top_ports"][:6]))
print("top sources:", ", ".join(f"{s['ip']} ({s['packets']})" for s in o["top_sources"][:5]))
PY
cat <<MSG

Where to look (aggregator at $URL):
  Console:  $URL/#/overview?$RANGE
  API:
  $URL/api/v1/overview?$RANGE
  $URL/api/v1/ports/top?$RANGE
  $URL/api/v1/ports/tcp/23/series?$RANGE&step=1h
  $URL/api/v1/sources/198.18.1.2
  $URL/api/v1/sensors
  $URL/api/v1/openapi.json      $URL/metrics
MSG
if [ "${DEMO_EXIT:-0}" = "1" ]; then exit 0; fi
echo "Aggregator running; Ctrl-C to stop."
wait $AGG_PID
