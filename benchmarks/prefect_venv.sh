# Sourced by benchmarks/run.sh and benchmarks/compare.sh after workers/farm_env.sh:
# make sure the prefect-docker venv part a compares against exists (created once, from PyPI,
# apart from dockyard's .venv) and export DOCKYARD_BENCH_PREFECT_PYTHON, its python.
# DOCKYARD_BENCH_PREFECT_VENV puts it elsewhere than <farm dir>/bench-prefect-venv.
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
