#!/usr/bin/env bash
# Runs the README's sessions exactly as written: every ```sh block between
# <!-- session:begin --> and <!-- session:end --> markers, in order, in one
# shell with `set -euo pipefail`, against `crm serve --dev` on the default
# ports (localhost:50051 and localhost:8080). Fails if any command fails.
# Runs them twice against the same database: a reader may run them again.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" != "--inner" ]; then
    for tool in grpcurl jq curl; do
        command -v "$tool" >/dev/null || { echo "readme-session: $tool is required" >&2; exit 1; }
    done
    exec scripts/with-server.sh "$0" --inner
fi

script=$(mktemp)
trap 'rm -f "$script"' EXIT
awk '
    /<!-- session:begin -->/ { on = 1; next }
    /<!-- session:end -->/   { on = 0; next }
    on && /^```/             { next }
    on                       { print }
' README.md > "$script"
[ -s "$script" ] || { echo "readme-session: no session blocks in README.md" >&2; exit 1; }
for run in 1 2; do
    echo "readme-session: run $run"
    bash -euo pipefail -x "$script"
done
echo "readme-session: all README commands succeeded, twice"
