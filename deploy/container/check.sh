#!/usr/bin/env bash
# Builds the three images (Containerfile.sensor, .aggregator, .clickhouse)
# and runs what deploy/compose.yaml runs, end to end: ClickHouse (and the
# compose healthcheck command), the aggregator's `migrate`, credentials,
# `serve`, then the sensor image replaying testdata/realscan/all-small.pcap
# into it over HTTP; the packets the API reports must equal the capture's
# tshark truth (30,346 darknet packets).
#
#   bash deploy/container/check.sh            # root; podman (or ENGINE=...)
#   SKIP_BUILD=1 bash deploy/container/check.sh   # run the images built last
#
# Each image runs from its own root filesystem (`ENGINE create` + `mount`)
# with chroot, as the image's USER, with its ENTRYPOINT and CMD, on the host's
# loopback: this checks the images' contents (binaries, libraries, users,
# directories, configs, commands) on machines where no container runtime can
# start (this project's CI machines cannot: no cgroup or rlimit control), but
# not the runtime's isolation. Ports 8080, 8123 and 9000 must be free.
#
# Base images: `docker.io/library/debian:bookworm-slim` and
# `docker.io/library/rust:1-bookworm`, pulled as usual; where the registry is
# out of reach, LOCAL_BASES=1 builds stand-ins first (local-bases.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
[ "$(id -u)" -eq 0 ] || { echo "check: needs root (mount, chroot)" >&2; exit 1; }
ENGINE=${ENGINE:-podman}
# podman on hosts with cgroup v1 needs runc and cgroupfs to run build steps.
if [ "$ENGINE" = podman ] && command -v runc >/dev/null; then
  ENGINE="podman --runtime runc --cgroup-manager=cgroupfs"
fi
[ "${LOCAL_BASES:-0}" = 1 ] && ENGINE="$ENGINE" bash deploy/container/local-bases.sh

for i in sensor aggregator clickhouse; do
  [ "${SKIP_BUILD:-0}" = 1 ] && break   # images built already
  echo "check: building darkscope-$i"
  $ENGINE build --network host -q -f "deploy/container/Containerfile.$i" -t "darkscope-$i" . >/dev/null
done

for port in 8080 8123 9000; do
  if ss -ltnH "sport = :$port" | grep -q .; then
    echo "check: port $port is in use; stop what listens there first" >&2
    exit 1
  fi
done

WORK=$(mktemp -d)
roots=() ctrs=()
cleanup() {
  # Every process running inside one of the root filesystems.
  for r in "${roots[@]}"; do
    for p in /proc/[0-9]*; do
      [ "$(readlink "$p/root" 2>/dev/null)" = "$r" ] && kill "${p#/proc/}" 2>/dev/null
    done
  done
  sleep 2
  for r in "${roots[@]}"; do umount "$r/proc" "$r/dev" 2>/dev/null || true; done
  for c in "${ctrs[@]}"; do $ENGINE rm -f "$c" >/dev/null 2>&1 || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

# root IMAGE: a writable root filesystem of IMAGE, in $ROOT (not printed:
# a command substitution's subshell would lose what cleanup needs).
root() {
  local c
  c=$($ENGINE create "darkscope-$1")
  ctrs+=("$c")
  local r
  r=$($ENGINE mount "$c")
  ROOT=$r
  mount -t proc proc "$r/proc"
  mount --bind /dev "$r/dev"
  roots+=("$r")
  # What a container runtime provides: /etc/hosts with localhost.
  printf '127.0.0.1 localhost\n::1 localhost\n' > "$r/etc/hosts"
}
# inside ROOT IMAGE [ARGS...]: runs the image's entrypoint (with ARGS, or its
# CMD) in ROOT as the image's user.
inside() {
  local r=$1 image=$2; shift 2
  local user
  user=$($ENGINE image inspect --format '{{.Config.User}}' "darkscope-$image")
  local -a cmd
  mapfile -t cmd < <($ENGINE image inspect --format '{{range .Config.Entrypoint}}{{println .}}{{end}}' "darkscope-$image" | sed '/^$/d')
  if [ $# -gt 0 ]; then cmd+=("$@"); else
    mapfile -t -O "${#cmd[@]}" cmd < <($ENGINE image inspect --format '{{range .Config.Cmd}}{{println .}}{{end}}' "darkscope-$image" | sed '/^$/d')
  fi
  # In the background (a subshell), become the program, so that killing
  # it kills the program.
  if [ "$BASH_SUBSHELL" -gt 0 ]; then
    exec chroot --userspec="${user:-root}" "$r" /usr/bin/env HOME=/ "${cmd[@]}"
  fi
  chroot --userspec="${user:-root}" "$r" /usr/bin/env HOME=/ "${cmd[@]}"
}

root clickhouse; CH=$ROOT
inside "$CH" clickhouse > "$WORK/clickhouse.log" 2>&1 &
for _ in $(seq 120); do
  # The compose healthcheck, as compose runs it.
  chroot "$CH" clickhouse-client --port 9000 --query "SELECT 1" >/dev/null 2>&1 && break
  sleep 0.5
done
chroot "$CH" clickhouse-client --port 9000 --query "SELECT 1" >/dev/null || { echo "check: ClickHouse did not start"; cat "$WORK/clickhouse.log"; exit 1; }
echo "check: ClickHouse image up, healthcheck passes"

root aggregator; AGG=$ROOT
# What compose mounts, and the compose network's name for ClickHouse.
mkdir -p "$AGG/etc/darkscope"
cp deploy/compose-aggregator.toml "$AGG/etc/darkscope/aggregator.toml"
echo "127.0.0.1 clickhouse" >> "$AGG/etc/hosts"
inside "$AGG" aggregator migrate
inside "$AGG" aggregator sensor add --id box-1 --country JP > "$WORK/box-1.token"
inside "$AGG" aggregator analyst add --name check > "$WORK/analyst.token"
inside "$AGG" aggregator > "$WORK/aggregator.log" 2>&1 &
for _ in $(seq 100); do curl -sf http://127.0.0.1:8080/healthz >/dev/null 2>&1 && break; sleep 0.2; done
curl -sf http://127.0.0.1:8080/healthz >/dev/null || { echo "check: aggregator did not start"; cat "$WORK/aggregator.log"; exit 1; }
echo "check: aggregator image migrated ClickHouse and serves"

root sensor; SEN=$ROOT
cp testdata/realscan/all-small.pcap "$SEN/tmp/"
install -m 0400 -o "$(chroot "$SEN" id -u darkscope-sensor)" "$WORK/box-1.token" "$SEN/tmp/box-1.token"
inside "$SEN" sensor --read /tmp/all-small.pcap --darknet 198.19.0.0/16,2001:db8:dead::/48 \
  --id box-1 --country JP --window 60 --out /dev/null --no-progress \
  --aggregator http://127.0.0.1:8080 --token-file /tmp/box-1.token --spool /var/lib/darkscope-sensor/spool
echo "check: sensor image replayed all-small.pcap into the aggregator"

python3 - "$(cat "$WORK/analyst.token")" <<'PY'
import json, sys, urllib.request
truth = json.load(open("testdata/realscan/all-small.truth.json"))
req = urllib.request.Request(
    "http://127.0.0.1:8080/api/v1/overview?from=2026-11-21T00:00:00Z&to=2026-11-23T00:00:00Z",
    headers={"Authorization": "Bearer " + sys.argv[1]})
o = json.load(urllib.request.urlopen(req))
print(f"check: API reports {o['packets']} packets in {o['windows']} windows; truth {truth['packets_darknet']}")
sys.exit(0 if o["packets"] == truth["packets_darknet"] else 1)
PY
echo "check: ok"
