#!/usr/bin/env python3
"""Writes a benchmark report into BENCHMARKS.md between the markers
<!-- bench:NAME:begin --> and <!-- bench:NAME:end --> (appended if absent).

    bench_section.py NAME REPORT_FILE COMMAND
"""
import datetime
import os
import pathlib
import subprocess
import sys

name, report, command = sys.argv[1], pathlib.Path(sys.argv[2]), sys.argv[3]


def sh(cmd):
    return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()


cpu = sh("lscpu | sed -n 's/^Model name: *//p'") or "unknown CPU"
mem = sh("awk '/MemTotal/ {printf \"%.0f GiB\", $2/1048576}' /proc/meminfo")
pg = sh("psql -h 127.0.0.1 -U postgres -tAc 'SHOW server_version'").split(" ")[0]
machine = f"{os.cpu_count()} cores ({cpu}), {mem}, PostgreSQL {pg}, {sh('rustc --version')}"
path = pathlib.Path("BENCHMARKS.md")
text = path.read_text() if path.exists() else "# Benchmarks\n\n"
begin, end = f"<!-- bench:{name}:begin -->", f"<!-- bench:{name}:end -->"
section = (
    f"{begin}\nMeasured {datetime.date.today()} on {machine} with `{command}`.\n\n"
    f"{report.read_text().strip()}\n{end}"
)
if begin in text:
    head, rest = text.split(begin, 1)
    text = head + section + rest.split(end, 1)[1]
else:
    text = text.rstrip() + "\n\n" + section + "\n"
path.write_text(text)
print(f"BENCHMARKS.md: {name} section updated")
