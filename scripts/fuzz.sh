#!/usr/bin/env bash
# Fuzzes the filter parser/compiler and the page-token decoder with
# cargo-fuzz (libFuzzer) for a bounded time each.
#   scripts/fuzz.sh [seconds-per-target]   (default 60)
# Needs `cargo install cargo-fuzz`. The stable toolchain is enough:
# RUSTC_BOOTSTRAP=1 unlocks the sanitizer flags libFuzzer builds use.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
for target in filter page_token; do
    echo "==> fuzzing $target for ${seconds}s"
    RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" -- -max_total_time="$seconds" -max_len=4096 -timeout=5
done
