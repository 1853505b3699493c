#!/usr/bin/env bash
# Drives headless Chromium against a scratch server: the API explorer
# (tests/browser/explorer.test.mjs), and the TypeScript client's browser entry
# over gRPC-Web from the explorer's origin (tests/browser/grpc-web.test.mjs,
# which bundles clients/typescript/src with esbuild, hence its npm ci).
# Needs /usr/bin/chromium and node.
set -euo pipefail
cd "$(dirname "$0")/.."
( cd tests/browser && npm ci --silent --no-audit --no-fund )
( cd clients/typescript && npm ci --silent --no-audit --no-fund --ignore-scripts )
exec scripts/with-server.sh bash -c 'node tests/browser/explorer.test.mjs && node tests/browser/grpc-web.test.mjs'
