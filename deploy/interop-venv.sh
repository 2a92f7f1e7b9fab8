#!/usr/bin/env bash
# Creates (once) the Python virtualenv with the third-party STIX/TAXII
# clients the interoperability tests run: the OASIS validator
# (stix2-validator), taxii2-client, and mmdb-writer (MaxMind-format test
# databases), pinned in
# aggregator/tests/interop/requirements.txt. Prints the venv's python.
#
#   deploy/interop-venv.sh            # venv in target/interop-venv
#   DARKSCOPE_PYVENV=/opt/v deploy/interop-venv.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
req="$root/aggregator/tests/interop/requirements.txt"
venv="${DARKSCOPE_PYVENV:-$root/target/interop-venv}"
stamp="$venv/.requirements"
if [[ -x "$venv/bin/python" ]] && cmp -s "$req" "$stamp"; then
    echo "$venv/bin/python"
    exit 0
fi
command -v python3 >/dev/null || { echo "interop-venv: python3 is needed (apt-get install python3 python3-venv)" >&2; exit 1; }
python3 -m venv "$venv" >&2
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req" >&2
cp "$req" "$stamp"
echo "$venv/bin/python"
