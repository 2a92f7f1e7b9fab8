#!/usr/bin/env bash
# The main job on embedded defaults: builds darkscope, runs the sensor over the
# real scanner captures in testdata/realscan, writes one summary per minute
# per capture, and prints what it saw.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/setup.sh
cargo build --release -q -p darkscope-sensor
out=${DEMO_OUT:-demo-out}
mkdir -p "$out"
./target/release/darkscope-sensor --read testdata/realscan/all-small.pcap \
  --darknet 198.19.0.0/16,2001:db8:dead::/48 --id demo-1 --country JP \
  --window 60 --out "$out/summaries.jsonl"
python3 - "$out/summaries.jsonl" <<'PY'
import json, sys, collections
ports, classes, fps, n = collections.Counter(), collections.Counter(), collections.Counter(), 0
for line in open(sys.argv[1]):
    s = json.loads(line); n += 1
    for p in s["ports"]: ports[(p["proto"], p["port"])] += p["packets"]
    for k, v in s["classes"].items(): classes[k] += v
    for r in s["sources"]:
        for f in r["fingerprints"]: fps[(f, r["ip"])] = 1
print(f"\n{n} window summaries in {sys.argv[1]}")
print("classes:", ", ".join(f"{k}={v}" for k, v in classes.most_common() if v))
print("top ports:", ", ".join(f"{p}/{q}={v}" for (p, q), v in ports.most_common(8)))
print("fingerprinted sources:", ", ".join(sorted(f"{f}:{ip}" for f, ip in fps)))
PY
echo "The aggregator (API, dashboard) is not built yet; summaries are JSON lines in $out/."
