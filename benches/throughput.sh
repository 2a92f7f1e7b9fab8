#!/usr/bin/env bash
# Offline throughput and peak RSS of darkscope-sensor against its peers, all on
# the same generated IBR-like file, in one run. Prints a Markdown table for
# benches/RESULTS.md. Usage: bash benches/throughput.sh [PACKETS]   (default 5000000)
set -euo pipefail
cd "$(dirname "$0")/.."
PACKETS=${1:-5000000}
OUT=benches/out
mkdir -p "$OUT"
bash deploy/setup.sh >/dev/null
for pkg in argus:argus-server darkstat:darkstat; do
  command -v "${pkg%%:*}" >/dev/null || { [ "$(id -u)" -eq 0 ] && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkg##*:}" >/dev/null || true; }
done
cargo build --release -q -p darkscope-sensor -p darkscope-benches
F="$OUT/ibr-$PACKETS.pcap"
[ -f "$F" ] || ./target/release/darkscope-gen --out "$F" --packets "$PACKETS" --sources 500000 --duration 600 --seed 42
S="$OUT/spoofed-2m.pcap"
[ -f "$S" ] || ./target/release/darkscope-gen --out "$S" --spoofed 2000000
DN=198.19.0.0/16,2001:db8:dead::/48

# run NAME FILE CMD...: one timed run; each tool's row keeps its fastest
# run (the machine's speed drifts by 10-25 % within minutes, and noise only
# ever adds time) and that run's peak RSS.
names=()
declare -A best rss files cmds
run() {
  local name=$1 file=$2; shift 2
  /usr/bin/time -f "%e %M" -o "$OUT/time.txt" "$@" >/dev/null 2>"$OUT/stderr.txt" || { echo "$name failed:"; cat "$OUT/stderr.txt"; return; }
  read -r secs kib < "$OUT/time.txt"
  if [ -z "${best[$name]:-}" ]; then names+=("$name"); fi
  if [ -z "${best[$name]:-}" ] || awk "BEGIN{exit !($secs < ${best[$name]})}"; then
    best[$name]=$secs; rss[$name]=$kib; files[$name]=$file; cmds[$name]="$*"
  fi
}
OURS="darkscope-sensor (full pipeline)"
FLOOR="tcpdump -r F -w /dev/null (read floor)"
# The two quick tools run again between the slow ones, so a slow spell of
# the machine cannot fall on all of their runs while the slow tools, whose
# single runs last minutes, average over it.
quick() {
  run "$OURS" "$F" ./target/release/darkscope-sensor --read "$F" --darknet $DN --window 60 --no-progress --out /dev/null
  run "$FLOOR" "$F" tcpdump -r "$F" -w /dev/null
}
N=$PACKETS
quick; quick; quick
run "darkstat -r F (per-host counts)" "$F" darkstat -r "$F" --no-daemon --export "$OUT/darkstat.db" -b 127.0.0.1 -p 18099
quick
run "argus -r F -w /dev/null (flows)" "$F" argus -r "$F" -w /dev/null
quick
# tshark twice each (its fastest run, as for every tool).
for _ in 1 2; do
  run "tshark -q -z conv,ip" "$F" tshark -n -q -r "$F" -z conv,ip
  quick
  run "tshark -q -z endpoints,ip" "$F" tshark -n -q -r "$F" -z endpoints,ip
  quick
done
for _ in 1 2 3; do
  run "darkscope-sensor, 2,000,000 spoofed sources, one window" "$S" ./target/release/darkscope-sensor --read "$S" --darknet $DN --window 60 --no-progress --out /dev/null
done

ours=${best[$OURS]}
echo "Machine: $(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(date -u +%F)"
echo "File: $F ($N frames, $(du -h "$F" | cut -f1)); command: bash benches/throughput.sh $N"
echo
echo "| tool | wall s (fastest run) | Mpps | peak RSS MiB | darkscope speed ÷ tool speed |"
echo "|---|---:|---:|---:|---:|"
for name in "${names[@]}"; do
  secs=${best[$name]} file=${files[$name]}
  frames=$N; [ "$file" = "$S" ] && frames=2000000
  mpps=$(awk "BEGIN{printf \"%.2f\", $frames/$secs/1e6}")
  ratio=$([ "$file" = "$F" ] && awk "BEGIN{printf \"%.2f\", $secs/$ours}" || echo "-")
  echo "| $name | $secs | $mpps | $(( ${rss[$name]} / 1024 )) | $ratio |"
done
