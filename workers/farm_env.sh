# Sourced by the farm's commands (workers/run.sh, benchmarks/run.sh, benchmarks/soak.sh):
# provision the local farm (idempotent) and export its farm.env settings.
# Expects the working directory to be the repository root.
env_file="$(bash workers/provision.sh --hosts "${DOCKYARD_FARM_HOSTS:-2}" | tail -n 1)"
set -a
# shellcheck disable=SC1090
. "$env_file"
set +a
