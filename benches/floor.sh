#!/usr/bin/env bash
# The sensor's front-end floor: how long the offline sensor takes when its
# statistics shards do nothing, against the full sensor and tcpdump's read
# floor, N alternating runs each on the same file. The "front end" build is
# this checkout with one line changed (the shard drops each batch instead
# of adding it), built in a throw-away git worktree, so it measures exactly
# libpcap reading + decode + classify + batching + the channel hops + empty
# summaries. If it alone is over 1.5x tcpdump, no work on the statistics can
# bring the full sensor within 1.5x.
# Usage: bash benches/floor.sh [N] [FILE]   (default 7, benches/out/ibr-5000000.pcap)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-7} file=${2:-benches/out/ibr-5000000.pcap}
[ -f "$file" ] || { echo "no $file: run benches/throughput.sh first (it generates it)"; exit 1; }
cargo build --release -q -p darkscope-sensor
wt=$(mktemp -d /tmp/darkscope-floor.XXXXXX)
trap 'git worktree remove --force "$wt" >/dev/null 2>&1 || rm -rf "$wt"' EXIT
git worktree add -q --detach "$wt" HEAD
line='                shard.add_batch(&b.records);'
grep -qxF "$line" "$wt/sensor/src/pipeline.rs" || { echo "floor.sh: the shard's add_batch line moved; update this script"; exit 1; }
sed -i "s|^$line\$|                std::hint::black_box(\&b.records);|" "$wt/sensor/src/pipeline.rs"
CARGO_TARGET_DIR=target/floor cargo build --release -q --manifest-path "$wt/Cargo.toml" -p darkscope-sensor
args=(--read "$file" --darknet 198.19.0.0/16,2001:db8:dead::/48 --window 60 --no-progress --out /dev/null)
for _ in $(seq "$n"); do
  /usr/bin/time -f "tcpdump %e %U %S %M" tcpdump -r "$file" -w /dev/null 2>&1 | grep '^tcpdump '
  /usr/bin/time -f "front-end %e %U %S %M" target/floor/release/darkscope-sensor "${args[@]}" 2>&1 | grep '^front-end '
  /usr/bin/time -f "full %e %U %S %M" target/release/darkscope-sensor "${args[@]}" 2>&1 | grep '^full '
done | awk '{ if (!($1 in w) || $2 < w[$1]) w[$1] = $2; c = $3 + $4; if (!($1 in cpu) || c < cpu[$1]) cpu[$1] = c }
  END { printf "| run | min wall s | min CPU s | wall ÷ tcpdump |\n|---|---:|---:|---:|\n";
        split("tcpdump front-end full", k, " ");
        for (i = 1; i <= 3; i++) printf "| %s | %.2f | %.2f | %.2f |\n", k[i], w[k[i]], cpu[k[i]], w[k[i]] / w["tcpdump"] }'
