#!/usr/bin/env bash
# The load harness (benches/load.rs): the release server under N concurrent
# clients over gRPC and REST, against pgbench running the same operations'
# SQL in the same run; writes the report into BENCHMARKS.md.
#   scripts/bench.sh [--clients 32] [--seconds 10] [--ops get,create]
#   scripts/bench.sh --smoke     # seconds; checks every part works (CI),
#                                # prints the report, leaves BENCHMARKS.md alone
set -euo pipefail
cd "$(dirname "$0")/.."
command -v pgbench >/dev/null || export PATH="$PATH:$(ls -d /usr/lib/postgresql/*/bin | tail -n1)"
cargo build --release --bin crm
out=$(mktemp)
trap 'rm -f "$out"' EXIT
cargo bench --bench load -- "$@" > "$out"
cat "$out"
case " $* " in
    *" --smoke "*) ;;
    *) python3 scripts/lib/bench_section.py load "$out" "scripts/bench.sh${*:+ $*}" ;;
esac
