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

farm_dir="${DOCKYARD_FARM_DIR:-/var/lib/dockyard-farm}"
prefect_venv="${DOCKYARD_BENCH_PREFECT_VENV:-$farm_dir/bench-prefect-venv}"
if ! "$prefect_venv/bin/python" -c "import prefect_docker.deployments.steps" >/dev/null 2>&1; then
  echo "bench: creating the prefect-docker venv $prefect_venv (pip install prefect-docker) ..." >&2
  rm -rf "$prefect_venv"
  python3 -m venv "$prefect_venv"
  "$prefect_venv/bin/pip" install --quiet --disable-pip-version-check prefect-docker >"$farm_dir/bench-prefect-pip.log" 2>&1 \
    || { echo "bench: pip install prefect-docker failed, see $farm_dir/bench-prefect-pip.log" >&2; exit 1; }
fi
export DOCKYARD_BENCH_PREFECT_PYTHON="$prefect_venv/bin/python"
exec .venv/bin/python -m benchmarks.run "$@"
