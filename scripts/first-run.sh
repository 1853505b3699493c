#!/usr/bin/env bash
# A newcomer's first run, on a machine with PostgreSQL installed but no
# server running: the README's first command (`cargo run -- serve --dev`)
# starts a private cluster and serves on it; a token from `cargo run -- token`
# works; stopping crm stops the cluster; the tests run on a private,
# throwaway cluster of their own. It stops the local cluster for the
# duration and starts it again: run it alone (CI runs it last).
set -euo pipefail
cd "$(dirname "$0")/.."

version=$(ls /etc/postgresql | head -n1)
pg_ctlcluster --skip-systemctl-redirect "$version" main stop
# The private cluster's directory (root: under TMPDIR; reachable by the
# postgres user the cluster then runs as).
export TMPDIR
TMPDIR=$(mktemp -d)
chmod 755 "$TMPDIR"
log="$TMPDIR/serve.log"
server=
finish() {
    status=$?
    [ -n "$server" ] && kill "$server" 2>/dev/null || true
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    [ "$status" = 0 ] || { echo "first-run: failed; crm's output:" >&2; cat "$log" >&2 || true; }
    exit "$status"
}
trap finish EXIT

cargo build -q
# Exactly the README's first command.
cargo run -q -- serve --dev >"$log" 2>&1 &
server=$!
for _ in $(seq 1 120); do
    curl -fsS http://127.0.0.1:8080/readyz >/dev/null 2>&1 && break
    kill -0 "$server" 2>/dev/null || { echo "first-run: crm exited" >&2; exit 1; }
    sleep 0.5
done
curl -fsS http://127.0.0.1:8080/readyz >/dev/null
grep -q "a private cluster in $TMPDIR/crm-dev-postgres" "$log" || {
    echo "first-run: the banner does not name the private cluster" >&2
    exit 1
}
grep -q "token     .* token --tenant acme --sub ada" "$log"
TOKEN=$(cargo run -q -- token --tenant acme --sub ada 2>/dev/null)
curl -fsS -X POST http://127.0.0.1:8080/api/v1/crm/accounts -H "Authorization: Bearer $TOKEN" \
    -d '{"name": "First run"}' | jq -e '.id | startswith("acc_")' >/dev/null
# Development mode listens on loopback only.
if ss -ltn | grep -E '(0\.0\.0\.0|\*|\[::\]):(8080|50051)\b'; then
    echo "first-run: --dev listens beyond loopback" >&2
    exit 1
fi
kill -TERM "$server"
wait "$server" || true
server=
# The watchdog stops the private cluster once crm has exited.
for _ in $(seq 1 40); do
    pgrep -f "postgres -D $TMPDIR/crm-dev-postgres" >/dev/null || break
    sleep 0.5
done
if pgrep -f "postgres -D $TMPDIR/crm-dev-postgres" >/dev/null; then
    echo "first-run: the private cluster outlived crm" >&2
    exit 1
fi
echo "first-run: crm serve --dev served on a private cluster, stopped with it"

# The tests, with no server answering: a throwaway cluster of their own.
cargo test -q --test api accounts:: 2>&1 | tail -n 3
if ls -d "$TMPDIR"/crm-test-postgres-* >/dev/null 2>&1; then
    sleep 3
    ! ls -d "$TMPDIR"/crm-test-postgres-* >/dev/null 2>&1 || {
        echo "first-run: the tests' private cluster was not removed" >&2
        exit 1
    }
fi
echo "first-run: the tests ran on a private cluster"
