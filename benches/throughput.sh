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

# run NAME REPEATS FILE CMD...: best-of-REPEATS wall seconds and the peak RSS of that run.
rows=()
run() {
  local name=$1 reps=$2 file=$3; shift 3
  local best="" rss=""
  for _ in $(seq "$reps"); do
    /usr/bin/time -f "%e %M" -o "$OUT/time.txt" "$@" >/dev/null 2>"$OUT/stderr.txt" || { echo "$name failed:"; cat "$OUT/stderr.txt"; return; }
    read -r secs kib < "$OUT/time.txt"
    if [ -z "$best" ] || awk "BEGIN{exit !($secs < $best)}"; then best=$secs; rss=$kib; fi
  done
  rows+=("$name|$best|$((rss / 1024))|$file|$*")
}
N=$PACKETS
run "darkscope-sensor (full pipeline)" 3 "$F" ./target/release/darkscope-sensor --read "$F" --darknet $DN --window 60 --no-progress --out /dev/null
run "tcpdump -r F -w /dev/null (read floor)" 3 "$F" tcpdump -r "$F" -w /dev/null
run "darkstat -r F (per-host counts)" 1 "$F" darkstat -r "$F" --no-daemon --export "$OUT/darkstat.db" -b 127.0.0.1 -p 18099
run "argus -r F -w /dev/null (flows)" 1 "$F" argus -r "$F" -w /dev/null
run "tshark -q -z conv,ip" 1 "$F" tshark -n -q -r "$F" -z conv,ip
run "tshark -q -z endpoints,ip" 1 "$F" tshark -n -q -r "$F" -z endpoints,ip
run "darkscope-sensor, 2,000,000 spoofed sources, one window" 3 "$S" ./target/release/darkscope-sensor --read "$S" --darknet $DN --window 60 --no-progress --out /dev/null

ours=$(echo "${rows[0]}" | cut -d'|' -f2)
echo "Machine: $(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(date -u +%F)"
echo "File: $F ($N frames, $(du -h "$F" | cut -f1)); command: bash benches/throughput.sh $N"
echo
echo "| tool | wall s | Mpps | peak RSS MiB | darkscope speed ÷ tool speed |"
echo "|---|---:|---:|---:|---:|"
for r in "${rows[@]}"; do
  IFS='|' read -r name secs mib file cmd <<<"$r"
  frames=$N; [ "$file" = "$S" ] && frames=2000000
  mpps=$(awk "BEGIN{printf \"%.2f\", $frames/$secs/1e6}")
  ratio=$([ "$file" = "$F" ] && awk "BEGIN{printf \"%.2f\", $secs/$ours}" || echo "-")
  echo "| $name | $secs | $mpps | $mib | $ratio |"
done
