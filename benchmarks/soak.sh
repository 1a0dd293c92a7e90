#!/usr/bin/env bash
# Soak dockyard on a local farm: many small builds over two engines with two real workers.
#   bash benchmarks/soak.sh [--builds 500] [--distinct 150] [--clients 8] [--json PATH] [other options]
# Provisions the farm (idempotent), exports farm.env, then runs `python -m benchmarks.soak`.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
env_file="$(bash workers/provision.sh --hosts "${DOCKYARD_FARM_HOSTS:-2}" | tail -n 1)"
set -a
# shellcheck disable=SC1090
. "$env_file"
set +a
exec .venv/bin/python -m benchmarks.soak "$@"
