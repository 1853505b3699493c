#!/usr/bin/env bash
# Fault scenarios end to end against the release binary and the local
# Postgres: a database outage (pg_ctlcluster stop -m immediate, then start),
# SIGKILL and SIGTERM of the server, all under load, and webhook delivery
# (the receiver down, the server SIGKILLed meanwhile, the receiver back:
# every event delivered, in order, correctly signed). Prints what it checked
# (writes acknowledged / found, duplicates, lost, recovery time) and exits
# non-zero on any loss. It stops the local cluster: run it alone.
#   scripts/faults.sh [outage|sigkill|sigterm|webhook ...]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin crm --example faults
CRM_BIN=target/release/crm target/release/examples/faults "$@"
