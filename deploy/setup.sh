#!/usr/bin/env bash
# Installs what darkscope needs on a fresh Debian/Ubuntu machine: libpcap for
# building and capturing; tshark (the correctness oracle), tcpreplay, tcpdump
# and iproute2 for the tests; Chromium and its chromedriver for the console
# tests; ClickHouse for the second storage backend's tests (the tests start
# their own server on loopback; the package's own service is not used) and
# ZooKeeper for its cluster tests (started by the tests, no service);
# docker-compose to validate deploy/compose.yaml (no container engine);
# logrotate to run deploy/logrotate/darkscope; a
# Python virtualenv with the STIX/TAXII clients the interoperability tests
# use. Idempotent; needs root (or sudo).
set -euo pipefail
need=() lean=()
command -v pkg-config >/dev/null && pkg-config --exists libpcap 2>/dev/null || need+=(libpcap-dev pkg-config)
for tool in tshark:tshark tcpreplay:tcpreplay tcpdump:tcpdump ip:iproute2 chromium:chromium chromedriver:chromium-driver clickhouse-server:clickhouse-server logrotate:logrotate; do
  command -v "${tool%%:*}" >/dev/null || [ -x "/usr/sbin/${tool%%:*}" ] || need+=("${tool##*:}")
done
[ -e /usr/share/java/zookeeper.jar ] || need+=(zookeeper)
# Compose's own validator for deploy/compose.yaml (`docker-compose config`;
# no container engine: without recommends).
command -v docker-compose >/dev/null || lean+=(docker-compose)
if [ ${#need[@]} -gt 0 ] || [ ${#lean[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "setup: installing ${need[*]} ${lean[*]}"
  $SUDO apt-get update -qq
  [ ${#need[@]} -eq 0 ] || DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
  [ ${#lean[@]} -eq 0 ] || DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${lean[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "setup: cargo not found; install Rust (https://rustup.rs) first" >&2; exit 1; }
# The STIX/TAXII interoperability tests read our feeds with third-party
# Python clients (stix2-validator, taxii2-client) from a virtualenv.
if command -v python3 >/dev/null && ! python3 -c "import venv, ensurepip" 2>/dev/null; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv >/dev/null
fi
echo "setup: interop virtualenv $(bash "$(dirname "$0")/interop-venv.sh")"
echo "setup: ok"
