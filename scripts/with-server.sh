#!/usr/bin/env bash
# Starts `crm serve --dev` on a scratch database, waits until it answers,
# runs the given command with CRM_GRPC / CRM_HTTP / CRM_TOKEN set, then stops
# the server and drops the database. Exit status: the command's.
#   scripts/with-server.sh <command> [args...]
# CRM_BIN picks the server binary (default: target/debug/crm, built first).
set -euo pipefail
cd "$(dirname "$0")/.."

base="${CRM_TEST_PG:-postgres://postgres@127.0.0.1:5432}"
db="crm_scratch_$$"
grpc_addr="${CRM_GRPC_ADDR:-127.0.0.1:50051}"
http_addr="${CRM_HTTP_ADDR:-127.0.0.1:8080}"
log=$(mktemp)

bin="${CRM_BIN:-}"
if [ -z "$bin" ]; then
    cargo build -q
    bin=./target/debug/crm
fi
DATABASE_URL="$base/$db" CRM_GRPC_ADDR="$grpc_addr" CRM_HTTP_ADDR="$http_addr" \
    "$bin" serve --dev >"$log" 2>&1 &
server=$!
cleanup() {
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    # The database's roles (migration 0004) are cluster-wide: drop them too.
    roles=$(psql "$base/$db" -tAc "SELECT array_to_string(crm_roles(), ',')" 2>/dev/null || true)
    psql "$base/postgres" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
    if [[ "$roles" =~ ^[a-z0-9_]+(,[a-z0-9_]+)*$ ]]; then
        psql "$base/postgres" -qc "DROP ROLE IF EXISTS $roles" >/dev/null 2>&1 || true
    fi
    rm -f "$log"
}
trap cleanup EXIT

for _ in $(seq 1 120); do
    curl -fsS "http://$http_addr/readyz" >/dev/null 2>&1 && break
    kill -0 "$server" 2>/dev/null || { cat "$log" >&2; exit 1; }
    sleep 0.5
done
curl -fsS "http://$http_addr/readyz" >/dev/null

export CRM_GRPC="$grpc_addr" CRM_HTTP="http://$http_addr"
CRM_TOKEN=$("$bin" token --tenant "scratch-$$" --sub tester 2>/dev/null)
export CRM_TOKEN
status=0
"$@" || status=$?
if [ "$status" -ne 0 ]; then
    echo "with-server: '$*' failed ($status); server log:" >&2
    tail -n 100 "$log" >&2
fi
exit "$status"
