#!/usr/bin/env bash
# TypeScript client (clients/typescript): npm ci, generated-code check, strict
# typecheck, build, then the node:test suite against a real server started by
# scripts/with-server.sh on 127.0.0.1:50081 (gRPC) / 127.0.0.1:8081 (HTTP).
# CRM_BIN is passed through (unset: with-server.sh builds target/debug/crm).
# The server sends change-feed heartbeats after 1 s idle (not 15 s), so the
# watch tests see them quickly.
#   bash scripts/ts-client.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ts=clients/typescript

step() { printf '\n--> ts-client: %s\n' "$*"; }

node -e 'const [M] = process.versions.node.split(".").map(Number); if (M < 20) { console.error(`Node >= 20 required, found ${process.version}`); process.exit(1); }'

step "npm ci"
(cd "$ts" && npm ci --no-audit --no-fund --ignore-scripts)

step "generated code (src/gen) matches the protos"
(cd "$ts" && npm run -s check:generated)

step "tsc --noEmit (strict)"
(cd "$ts" && npm run -s typecheck)

step "build"
rm -rf "$ts/dist"
(cd "$ts" && npm run -s build)

step "tests against a real server"
CRM_CHANGES_HEARTBEAT_SECS=1 CRM_GRPC_ADDR=127.0.0.1:50081 CRM_HTTP_ADDR=127.0.0.1:8081 \
    scripts/with-server.sh node --test "$ts"/dist/test/*.test.js

echo "ts-client: OK"
