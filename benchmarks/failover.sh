#!/usr/bin/env bash
# Redis Sentinel failover during a build run (see benchmarks/failover.py): provision the farm and the
# Sentinel setup, then run `python -m benchmarks.failover "$@"` (default: 200 builds over two hosts).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=workers/farm_env.sh
. workers/farm_env.sh
exec .venv/bin/python -m benchmarks.failover "$@"
