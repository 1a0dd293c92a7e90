#!/usr/bin/env bash
# Soak dockyard on a local farm: many small builds over two engines with two real workers.
#   bash benchmarks/soak.sh [--builds 500] [--distinct 150] [--clients 8] [--json PATH] [other options]
# Provisions the farm (idempotent), exports farm.env, then runs `python -m benchmarks.soak`.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
# shellcheck source=workers/farm_env.sh
. workers/farm_env.sh
exec .venv/bin/python -m benchmarks.soak "$@"
