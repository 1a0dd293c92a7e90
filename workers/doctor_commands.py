"""The operator's health report: ``dockyard doctor`` prints, per live host, what its worker found at start.

Today that is the start-up probe of each host's build network
(``dockyard.tasks.engine.network_probe``, kept in the host record by
``dockyard.workers.heartbeat``): does a build step on that host's default
build network reach the farm's Redis, context store or ``/metrics``? It needs
the farm's worker (or admin) Redis user, as ``dockyard hosts`` does.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from dockyard.config.settings import get_settings


def build_network_line(record: dict[str, Any]) -> str:
    """``HOST: build network NET reaches the farm: yes (addresses)`` / ``no (probed ...)`` / ``unknown (why)``."""
    host = record.get("host", "?")
    probe = record.get("build_network")
    if not isinstance(probe, dict):
        return f"{host}: build network reaches the farm: unknown (not probed: DOCKYARD_BUILD_NETWORK_PROBE=false, or an older worker)"
    network = probe.get("network") or "?"
    probed = ", ".join(probe.get("probed") or []) or "no address"
    if probe.get("error"):
        return f"{host}: build network {network} reaches the farm: unknown ({probe['error']})"
    if probe.get("reaches_farm"):
        accepted = " [accepted: DOCKYARD_ACCEPT_BUILD_NETWORK_REACHING_FARM]" if probe.get("accepted") else ""
        return f"{host}: build network {network} reaches the farm: yes ({', '.join(probe.get('reached') or [])}){accepted}"
    return f"{host}: build network {network} reaches the farm: no (probed {probed})"


def cmd_doctor(args: argparse.Namespace) -> int:
    """Print each live host's start-up findings."""
    from dockyard.tasks.farm.hosts import live_hosts
    from dockyard.tasks.keyspace import redis_for

    settings = get_settings()
    records = live_hosts(redis_for(settings), settings)
    if args.json:
        print(json.dumps([{"host": record.get("host"), "build_network": record.get("build_network")} for record in records], indent=2))
        return 0
    if not records:
        print("no live hosts")
    for record in records:
        print(build_network_line(record))
    return 0


def add_commands(sub: Any, command: Callable[..., argparse.ArgumentParser]) -> None:
    """Add ``doctor`` to the CLI's subcommands."""
    doctor = command(sub, "doctor", "Report, per live host, whether its build steps can reach the farm.",
                     "For each live host: the network its build steps get by default and whether the start-up "
                     "probe step on it reached the farm's Redis, context store or /metrics (yes, with the "
                     "addresses; no; unknown, with why). An operator command: it needs the worker Redis user.")
    doctor.add_argument("--json", action="store_true", help="print each host's probe record as JSON")
    doctor.set_defaults(run=cmd_doctor)
