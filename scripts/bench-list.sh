#!/usr/bin/env bash
# The list-at-scale benchmark (benches/list.rs): seeds 2M accounts once (a
# few minutes; reused afterwards, CRM_BENCH_RESEED=1 to redo), measures the
# list queries through the gRPC API, and writes the results into
# BENCHMARKS.md between the list markers.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp)
trap 'rm -f "$out"' EXIT
cargo bench --bench list > "$out"
python3 scripts/lib/bench_section.py list "$out" scripts/bench-list.sh
