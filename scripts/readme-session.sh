#!/usr/bin/env bash
# Runs the README's grpcurl sessions exactly as written: every ```sh block
# between <!-- session:begin --> and <!-- session:end --> markers, in order,
# in one shell with `set -euo pipefail`, against `crm serve --dev` on
# localhost:50051 backed by a scratch database. Fails if any command fails.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in grpcurl jq; do
    command -v "$tool" >/dev/null || { echo "readme-session: $tool is required" >&2; exit 1; }
done

db="crm_readme_session"
base="${CRM_TEST_PG:-postgres://postgres@127.0.0.1:5432}"
psql "$base/postgres" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)"

script=$(mktemp)
log=$(mktemp)
awk '
    /<!-- session:begin -->/ { on = 1; next }
    /<!-- session:end -->/   { on = 0; next }
    on && /^```/             { next }
    on                       { print }
' README.md > "$script"
[ -s "$script" ] || { echo "readme-session: no session blocks in README.md" >&2; exit 1; }

cargo build -q
DATABASE_URL="$base/$db" CRM_GRPC_ADDR=127.0.0.1:50051 ./target/debug/crm serve --dev >"$log" 2>&1 &
server=$!
cleanup() {
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    psql "$base/postgres" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" || true
    rm -f "$script"
}
trap cleanup EXIT

for _ in $(seq 1 60); do
    grpcurl -plaintext localhost:50051 list >/dev/null 2>&1 && break
    kill -0 "$server" 2>/dev/null || { cat "$log" >&2; exit 1; }
    sleep 0.5
done

if ! bash -euo pipefail -x "$script"; then
    echo "readme-session: a README command failed; server log:" >&2
    cat "$log" >&2
    exit 1
fi
echo "readme-session: all README commands succeeded"
