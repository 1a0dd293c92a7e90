#!/usr/bin/env bash
# Run dockyard's benchmarks on a local farm:
#   bash benchmarks/run.sh [--only a,b,c] [--json PATH] [other options of benchmarks/run.py]
# Provisions the farm (idempotent), exports farm.env, creates the prefect-docker venv the
# comparison needs if it is missing (from PyPI, once), then runs `python -m benchmarks.run`.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
# shellcheck source=workers/farm_env.sh
. workers/farm_env.sh
# shellcheck source=benchmarks/prefect_venv.sh
. benchmarks/prefect_venv.sh
exec .venv/bin/python -m benchmarks.run "$@"
