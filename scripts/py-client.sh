#!/usr/bin/env bash
# Python client (clients/python, issue 9): a venv with the pinned
# dependencies, the package installed from the tree (non-editable, so its
# packaging is what gets tested), a byte-for-byte check that the committed
# generated code equals a fresh regeneration from proto/, a strict mypy pass,
# and the pytest suite against a real server on 127.0.0.1:50091 / :8091
# (via scripts/with-server.sh; CRM_BIN picks the binary, else it is built),
# which sends change-feed heartbeats after 1 s idle (not 15 s).
#   bash scripts/py-client.sh
set -euo pipefail
cd "$(dirname "$0")/.."

dir=clients/python
venv="$dir/.venv"
py="$venv/bin/python"
pip=("$py" -m pip --disable-pip-version-check --quiet)

step() { printf '\n--> py-client: %s\n' "$*"; }

step "venv ($venv)"
if [ ! -x "$py" ]; then
    if ! python3 -m venv "$venv"; then
        # no ensurepip (Debian without python3-venv): fall back to virtualenv
        rm -rf "$venv"
        python3 -m pip install --quiet virtualenv==20.29.3
        python3 -m virtualenv --quiet "$venv"
    fi
fi
"$py" --version

step "pinned dependencies and the package"
"${pip[@]}" install -r "$dir/requirements.txt"
"${pip[@]}" install --no-deps --no-build-isolation --force-reinstall "./$dir"
rm -rf "$dir/build" "$dir"/src/*.egg-info

step "generated code matches proto/ (regenerated into a temp dir)"
PYTHON="$py" "$dir/generate.sh" --check

step "mypy --strict"
(cd "$dir" && .venv/bin/mypy)

step "pytest against a real server"
CRM_CHANGES_HEARTBEAT_SECS=1 CRM_GRPC_ADDR=127.0.0.1:50091 CRM_HTTP_ADDR=127.0.0.1:8091 \
    scripts/with-server.sh "$py" -m pytest -q -p no:cacheprovider "$dir/tests"

echo "py-client: OK"
