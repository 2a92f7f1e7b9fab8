#!/usr/bin/env bash
# Local stand-ins for the two base images the Containerfiles start from, for
# hosts that cannot reach Docker Hub (air-gapped networks, this project's CI
# machines):
#   docker.io/library/debian:bookworm-slim  Debian 12 from debootstrap (minbase)
#   docker.io/library/rust:1-bookworm       that + gcc, pkg-config, git and this
#                                           host's stable Rust toolchain
# The Rust image also trusts this host's extra CA certificates (/usr/local/share/
# ca-certificates), for networks whose TLS proxy re-signs crates.io.
# Needs root, debootstrap and a Debian mirror (MIRROR). ENGINE as in check.sh.
set -euo pipefail
ENGINE=${ENGINE:-podman}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
command -v debootstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
TOOLCHAIN=$(dirname "$(dirname "$(rustup which rustc --toolchain stable)")")
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT

echo "local-bases: debootstrap bookworm"
debootstrap --variant=minbase bookworm "$W/rootfs" "$MIRROR" >/dev/null
tar -C "$W/rootfs" -c . | $ENGINE import - docker.io/library/debian:bookworm-slim >/dev/null

echo "local-bases: rust:1-bookworm with $(basename "$TOOLCHAIN")"
mkdir -p "$W/rust/ca"
cp /usr/local/share/ca-certificates/*.crt "$W/rust/ca/" 2>/dev/null || true
cp -a "$TOOLCHAIN" "$W/rust/toolchain"
rm -rf "$W/rust/toolchain/share/doc"
cat > "$W/rust/Containerfile" <<'EOF'
FROM docker.io/library/debian:bookworm-slim
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc libc6-dev make pkg-config ca-certificates git >/dev/null \
    && rm -rf /var/lib/apt/lists/*
COPY ca/ /usr/local/share/ca-certificates/
RUN update-ca-certificates >/dev/null 2>&1
COPY toolchain/ /usr/local/rust/
ENV PATH=/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
EOF
$ENGINE build --network host -q -t docker.io/library/rust:1-bookworm "$W/rust" >/dev/null
echo "local-bases: ok"
