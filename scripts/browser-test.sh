#!/usr/bin/env bash
# Drives the API explorer in headless Chromium against a scratch server
# (tests/browser/explorer.test.mjs). Needs /usr/bin/chromium and node.
set -euo pipefail
cd "$(dirname "$0")/.."
( cd tests/browser && npm ci --silent --no-audit --no-fund )
exec scripts/with-server.sh node tests/browser/explorer.test.mjs
