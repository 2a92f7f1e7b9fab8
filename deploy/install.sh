#!/usr/bin/env bash
# Installs darkscope on a fresh Debian/Ubuntu host, for real use (the demo
# is deploy/demo.sh). Usage, as root, from a checkout:
#   bash deploy/install.sh sensor       # capture box: darkscope-sensor
#   bash deploy/install.sh aggregator   # central host: darkscope-aggregator
# Builds release binaries (needs Rust: https://rustup.rs), installs them in
# /usr/local/bin, creates a dedicated system user, /etc/darkscope with the
# example config (kept if one exists), the systemd unit, and says what to do
# next. Idempotent: re-run it to upgrade (see deploy/UPGRADING.md).
set -euo pipefail
role="${1:-}"
case "$role" in
  sensor) bin=darkscope-sensor; user=darkscope-sensor; conf=sensor.toml ;;
  aggregator) bin=darkscope-aggregator; user=darkscope; conf=aggregator.toml ;;
  *) echo "usage: $0 sensor|aggregator" >&2; exit 2 ;;
esac
[ "$(id -u)" -eq 0 ] || { echo "install.sh: run as root" >&2; exit 1; }
cd "$(dirname "$0")/.."
need=(pkg-config)
[ "$role" = sensor ] && need+=(libpcap-dev)
[ "$role" = aggregator ] && need+=(libpcap-dev)   # the workspace builds both crates
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
command -v cargo >/dev/null || { echo "install.sh: cargo not found; install Rust first (https://rustup.rs)" >&2; exit 1; }
echo "install.sh: building $bin (release)"
cargo build --release --locked -p "$bin" --bin "$bin"
install -m 0755 "target/release/$bin" "/usr/local/bin/$bin"
id -u "$user" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$user"
install -d -m 0755 /etc/darkscope
if [ ! -e "/etc/darkscope/$conf" ]; then
  install -m 0640 -g "$user" "deploy/${conf%.toml}.example.toml" "/etc/darkscope/$conf"
  echo "install.sh: wrote /etc/darkscope/$conf from the example: edit it"
else
  echo "install.sh: kept the existing /etc/darkscope/$conf"
fi
install -m 0644 "deploy/systemd/$bin.service" "/etc/systemd/system/$bin.service"
install -d /usr/share/doc/darkscope && install -m 0644 README.md /usr/share/doc/darkscope/README.md
if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  echo "install.sh: enable and start with: systemctl enable --now $bin"
fi
if [ "$role" = sensor ]; then
  cat <<'TXT'
Next: set [sensor] id/country/darknet and [capture] interface in
/etc/darkscope/sensor.toml; set [upload] spool_dir = "/var/lib/darkscope-sensor/spool"
and token_file = "/etc/darkscope/sensor.token" (the token from
`darkscope-aggregator sensor add` on the aggregator; chmod 0640, group darkscope-sensor).
TXT
else
  cat <<'TXT'
Next: set database = "/var/lib/darkscope/darkscope.db" (or storage = "clickhouse",
then `darkscope-aggregator --config /etc/darkscope/aggregator.toml migrate`) in
/etc/darkscope/aggregator.toml, register sensors with
`sudo -u darkscope darkscope-aggregator --config /etc/darkscope/aggregator.toml sensor add ...`,
and put a TLS reverse proxy in front of the listener.
TXT
fi
