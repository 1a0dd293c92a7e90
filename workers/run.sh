#!/usr/bin/env bash
# The README's two commands:
#   bash workers/run.sh up     provision a local farm and run the main job (build -> push)
#   bash workers/run.sh test   provision and run the whole test suite
# Both provision idempotently (workers/provision.sh) and reuse what already runs.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
command="${1:-}"
shift || true
# shellcheck source=workers/farm_env.sh
. workers/farm_env.sh
case "$command" in
  up)   exec .venv/bin/dockyard up "$@" ;;
  test) exec .venv/bin/python -m pytest "$@" ;;
  *)    echo "usage: bash workers/run.sh up|test [args...]" >&2; exit 2 ;;
esac
