#!/usr/bin/env bash
# The list-at-scale benchmark (benches/list.rs): seeds 2M accounts once (a
# few minutes; reused afterwards, CRM_BENCH_RESEED=1 to redo), measures the
# list queries through the gRPC API, and writes the results into
# BENCHMARKS.md between the list markers.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp)
cargo bench --bench list > "$out"
machine="$(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(psql -h 127.0.0.1 -U postgres -tAc 'SHOW server_version' | cut -d' ' -f1) (PostgreSQL), $(rustc --version)"
python3 - "$out" "$machine" <<'PY'
import sys, pathlib, datetime
body = pathlib.Path(sys.argv[1]).read_text()
machine = sys.argv[2]
path = pathlib.Path("BENCHMARKS.md")
text = path.read_text() if path.exists() else "# Benchmarks\n\n"
begin, end = "<!-- bench:list:begin -->", "<!-- bench:list:end -->"
section = f"{begin}\nMeasured {datetime.date.today()} on {machine} with `scripts/bench-list.sh`.\n\n{body}\n{end}"
if begin in text:
    head, rest = text.split(begin, 1)
    text = head + section + rest.split(end, 1)[1]
else:
    text = text.rstrip() + "\n\n" + section + "\n"
path.write_text(text)
PY
rm -f "$out"
echo "BENCHMARKS.md updated"
