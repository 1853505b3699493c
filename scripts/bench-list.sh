#!/usr/bin/env bash
# The list-at-scale benchmark (benches/list.rs): seeds 2M accounts (1M in the
# measured tenant, with skewed names, tags and custom fields) and 400,000
# contacts, deals and activities once (several minutes; reused afterwards,
# CRM_BENCH_RESEED=1 to redo), measures the list queries through the gRPC
# API (page 1 and page 2 of each, under two orders), and writes the results
# and plans into BENCHMARKS.md between the list markers.
#
# A smaller run (CRM_BENCH_ROWS, e.g. 20000, with CRM_BENCH_DB=crm_bench_smoke)
# prints its report instead of writing BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp)
trap 'rm -f "$out"' EXIT
cargo bench --bench list > "$out"
rows=${CRM_BENCH_ROWS:-1000000}
if [ "${rows//[_,]/}" != 1000000 ]; then
    cat "$out"
    echo "CRM_BENCH_ROWS=$rows: a smoke run, BENCHMARKS.md left as it is" >&2
    exit 0
fi
python3 scripts/lib/bench_section.py list "$out" scripts/bench-list.sh
