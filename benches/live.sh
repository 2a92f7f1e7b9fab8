#!/usr/bin/env bash
# Live capture benchmark: tcpreplay pushes a generated IBR-like capture over a
# veth pair between two network namespaces that this script creates (nothing
# leaves them) at several rates and at --topspeed; the sensor captures on the
# other end. tcpreplay preloads the file into memory (-K), so that reading
# it from disk does not cap the rate it reaches. Reports, per rate, what
# tcpreplay reached and what the sensor counted and dropped (kernel /
# pipeline); then, to show what caps the rate, the same topspeed replay with
# nothing capturing and with tcpdump capturing instead. Needs root.
# Usage: bash benches/live.sh [PACKETS]   (default 1000000)
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "live.sh needs root (network namespaces)"; exit 1; }
PACKETS=${1:-1000000}
OUT=benches/out; mkdir -p "$OUT"
bash deploy/setup.sh >/dev/null
cargo build --release -q -p darkscope-sensor -p darkscope-benches
F="$OUT/ibr-$PACKETS.pcap"
[ -f "$F" ] || ./target/release/darkscope-gen --out "$F" --packets "$PACKETS" --sources 200000 --duration 600 --seed 42
TX=dsbtx$$ RX=dsbrx$$
cleanup() { ip netns del $TX 2>/dev/null || true; ip netns del $RX 2>/dev/null || true; }
trap cleanup EXIT
# The rate tcpreplay reports.
rated() { echo "$1" | grep -oP 'Rated: .*?, \K[0-9.]+(?= pps)' || echo "?"; }
ip netns add $TX; ip netns add $RX
ip link add vtx netns $TX type veth peer name vrx netns $RX
for ns in $TX $RX; do ip netns exec $ns sysctl -qw net.ipv6.conf.all.disable_ipv6=1; done
ip -n $TX link set vtx up; ip -n $RX link set vrx up

echo "| tcpreplay rate asked | reached (pps) | frames sent | sensor received | kernel dropped | pipeline dropped |"
echo "|---|---:|---:|---:|---:|---:|"
for rate in 100000 250000 500000 1000000 topspeed; do
  # A live sensor appends to --out (it survives restarts): start each rate afresh.
  rm -f "$OUT/live.jsonl"
  ip netns exec $RX ./target/release/darkscope-sensor --interface vrx --darknet 198.19.0.0/16,2001:db8:dead::/48 \
     --window 2 --buffer-mib 256 --out "$OUT/live.jsonl" 2>"$OUT/live.log" &
  pid=$!; sleep 1.5
  if [ $rate = topspeed ]; then args=(--topspeed); else args=(--pps=$rate); fi
  rep=$(ip netns exec $TX tcpreplay --intf1=vtx --preload-pcap "${args[@]}" "$F" 2>&1)
  sleep 1.5; kill -TERM $pid; wait $pid || true
  reached=$(rated "$rep")
  sent=$(echo "$rep" | grep -oP 'Successful packets:\s+\K[0-9]+' || echo "?")
  read -r recv kdrop pdrop < <(python3 -c "
import json,sys
r=k=p=0
for l in open('$OUT/live.jsonl'):
    c=json.loads(l)['capture']; r+=c['received']; k+=c['kernel_dropped']; p+=c['pipeline_dropped']
print(r,k,p)")
  echo "| $rate | $reached | $sent | $recv | $kdrop | $pdrop |"
done

# What caps tcpreplay: the same topspeed replay with nothing capturing on the
# far end, and with tcpdump capturing there instead of the sensor.
echo
echo "| far end (topspeed, file preloaded) | reached (pps) | captured | kernel dropped |"
echo "|---|---:|---:|---:|"
rep=$(ip netns exec $TX tcpreplay --intf1=vtx --preload-pcap --topspeed "$F" 2>&1)
echo "| nothing capturing | $(rated "$rep") | - | - |"
ip netns exec $RX tcpdump -i vrx -B 262144 --immediate-mode -w /dev/null 2>"$OUT/tcpdump.log" &
pid=$!; sleep 1.5
rep=$(ip netns exec $TX tcpreplay --intf1=vtx --preload-pcap --topspeed "$F" 2>&1)
sleep 1.5; kill -INT $pid; wait $pid || true
cap=$(grep -oP '^\d+(?= packets captured)' "$OUT/tcpdump.log" || echo "?")
kd=$(grep -oP '^\d+(?= packets dropped by kernel)' "$OUT/tcpdump.log" || echo "?")
echo "| tcpdump -B 262144 --immediate-mode -w /dev/null | $(rated "$rep") | $cap | $kd |"
