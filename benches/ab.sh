#!/usr/bin/env bash
# A/B timing of sensor builds on the same capture: N alternating runs of each
# binary (alternating, because this machine's speed drifts by 10-25 % within
# an hour), then per binary the minimum and median wall seconds, the minimum
# CPU seconds and the largest peak RSS. Usage:
#   bash benches/ab.sh N FILE BINARY [BINARY...]
# e.g. cp target/release/darkscope-sensor /tmp/before; (change, build);
#      bash benches/ab.sh 7 benches/out/ibr-5000000.pcap /tmp/before target/release/darkscope-sensor
set -euo pipefail
n=$1 file=$2; shift 2
declare -A wall cpu rss walls
for _ in $(seq "$n"); do
  for b in "$@"; do
    /usr/bin/time -f "%e %U %S %M" -o /tmp/ab-time.txt "$b" --read "$file" \
      --darknet 198.19.0.0/16,2001:db8:dead::/48 --window 60 --no-progress --out /dev/null 2>/dev/null
    read -r w u s m < /tmp/ab-time.txt
    c=$(awk "BEGIN{print $u + $s}")
    walls[$b]="${walls[$b]:-} $w"
    if [ -z "${wall[$b]:-}" ] || awk "BEGIN{exit !($w < ${wall[$b]})}"; then wall[$b]=$w; fi
    if [ -z "${cpu[$b]:-}" ] || awk "BEGIN{exit !($c < ${cpu[$b]})}"; then cpu[$b]=$c; fi
    if [ -z "${rss[$b]:-}" ] || [ "$m" -gt "${rss[$b]}" ]; then rss[$b]=$m; fi
  done
done
for b in "$@"; do
  med=$(echo "${walls[$b]}" | tr ' ' '\n' | sed '/^$/d' | sort -n | awk '{a[NR]=$1} END{print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}')
  echo "$b: min wall ${wall[$b]} s, median ${med} s, min CPU ${cpu[$b]} s, max peak RSS $(( ${rss[$b]} / 1024 )) MiB"
done
