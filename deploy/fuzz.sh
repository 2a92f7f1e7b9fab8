#!/usr/bin/env bash
# Fuzzes darkscope's input parsers with cargo-fuzz (libFuzzer + AddressSanitizer),
# each target for a bounded time, starting from the committed seeds:
#   sensor:     decode (frames × link types), pcap_file (whole capture files via libpcap)
#   aggregator: summary (upload bodies: encodings, decompression, JSON, validation),
#               federation_changes (peer documents), query_params (query/path values, ASN table)
# Usage: bash deploy/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]   (default 60 s, all)
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`); uses the nightly
# toolchain when installed, otherwise the stable one with RUSTC_BOOTSTRAP=1.
# A crash stops the run with the input saved under <crate>/fuzz/artifacts/;
# turn it into a regression test before fixing it (see SECURITY.md).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}; shift || true
want=("$@")
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
if cargo +nightly --version >/dev/null 2>&1; then fuzz=(cargo +nightly fuzz); else fuzz=(env RUSTC_BOOTSTRAP=1 cargo fuzz); fi
printf '| target | seconds | executions | exec/s | corpus | result |\n|---|---:|---:|---:|---:|---|\n'
for spec in sensor:decode sensor:pcap_file aggregator:summary aggregator:federation_changes aggregator:query_params; do
  crate=${spec%%:*}; target=${spec##*:}
  if [ ${#want[@]} -gt 0 ] && [[ ! " ${want[*]} " == *" $target "* ]]; then continue; fi
  corpus="target/fuzz-corpus/$target"; mkdir -p "$corpus"
  cp -n "$crate/fuzz/seeds/$target/"* "$corpus/" 2>/dev/null || true
  log="target/fuzz-corpus/$target.log"
  if (cd "$crate" && "${fuzz[@]}" run --release --debug-assertions "$target" "../$corpus" -- \
        -max_total_time="$secs" -max_len=65536 -rss_limit_mb=2048 -print_final_stats=1) >"$log" 2>&1; then
    result=ok
  else
    result="CRASH (see $log, $crate/fuzz/artifacts/$target/)"
  fi
  runs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -1)
  rate=$(( ${runs:-0} / (secs > 0 ? secs : 1) ))
  printf '| %s | %s | %s | %s | %s | %s |\n' "$target" "$secs" "${runs:-?}" "$rate" "$(ls "$corpus" | wc -l)" "$result"
  if [ "$result" != ok ]; then tail -40 "$log" >&2; exit 1; fi
done
