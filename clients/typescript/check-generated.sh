#!/usr/bin/env bash
# Fails if src/gen differs from a fresh `buf generate` of the repo's protos
# (run `npm run generate` and commit the result). Compares against a temp dir,
# so it does not depend on git state.
set -euo pipefail
cd "$(dirname "$0")"
export PATH="$PWD/node_modules/.bin:$PATH"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
buf generate ../.. --template buf.gen.yaml --output "$tmp"
if ! diff -ru src/gen "$tmp/src/gen"; then
    echo "clients/typescript/src/gen is out of date with proto/: run 'npm run generate' in clients/typescript and commit" >&2
    exit 1
fi
echo "clients/typescript/src/gen is up to date"
