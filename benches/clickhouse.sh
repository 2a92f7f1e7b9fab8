#!/usr/bin/env bash
# A loopback ClickHouse for the benchmarks, from deploy/clickhouse/single-node
# (Debian's clickhouse-server; `bash deploy/setup.sh` installs it), data in
# benches/out/ch. Runs in the foreground until interrupted.
# Usage: [HTTP_PORT=18123] bash benches/clickhouse.sh
#   then e.g. cargo run --release -p darkscope-benches --bin darkscope-query-bench -- \
#     --clickhouse http://127.0.0.1:18123 --db bench --days 3 --sensors 200
set -euo pipefail
cd "$(dirname "$0")/.."
HTTP=${HTTP_PORT:-18123}
TCP=$((HTTP + 1))
DIR=$(pwd)/benches/out/ch
mkdir -p "$DIR"/{log,data,tmp}
for f in config.xml users.xml; do
  sed -e "s|@DIR@|$DIR|g" -e "s|@HTTP_PORT@|$HTTP|g" -e "s|@TCP_PORT@|$TCP|g" \
    "deploy/clickhouse/single-node/$f" > "$DIR/$f"
done
BIN=$(command -v clickhouse-server || echo /usr/bin/clickhouse-server)
[ -x "$BIN" ] || { echo "clickhouse-server not found: bash deploy/setup.sh installs it" >&2; exit 1; }
echo "ClickHouse on http://127.0.0.1:$HTTP (data in $DIR; Ctrl-C stops it)" >&2
cd "$DIR" && exec "$BIN" --config-file="$DIR/config.xml"
