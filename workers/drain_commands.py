"""The operator's drain commands: ``dockyard drain HOST`` (and wait until it is empty) and ``dockyard undrain HOST``.

Both need the farm's worker (or admin) Redis user: a team's user may not write
the drain key (``dockyard.tasks.farm.drain``), and the command fails with
NoPermissionError.
"""

from __future__ import annotations

import argparse
import getpass
import json
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

from dockyard.config import defaults
from dockyard.config.settings import TEAM_QUEUE_SEPARATOR, get_settings


class DrainTimeout(Exception):
    """``dockyard drain`` waited its ``--timeout`` and the host still held work (exit 1); it stays drained."""


class BadHostId(Exception):
    """``dockyard drain``/``undrain`` was given a name no host id can have (exit 1)."""


def check_host_id(host_id: str) -> str:
    """``host_id`` as given, if a host could have it (the rules of ``DOCKYARD_HOST_ID``, and no glob)."""
    if (not host_id or host_id != host_id.strip() or any(char in host_id for char in "*?[] \t\n")
            or TEAM_QUEUE_SEPARATOR in host_id or host_id.endswith(defaults.FAST_QUEUE_SUFFIX)):
        raise BadHostId(f"{host_id!r} is not a host id (see 'dockyard hosts')")
    return host_id


def _operator() -> str:
    """Who drains: user@machine of this command, for the drain record."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _describe(progress: Any) -> str:
    shared = {True: "yes", False: "no", None: "unknown"}[progress.consuming_shared]
    seen = "" if progress.seen else ", drain not yet seen by its worker"
    return (f"{progress.running} running, {progress.held} held, {progress.queued} queued for it, "
            f"shared queues consumed: {shared}{seen}")


def wait_empty(
    read: Callable[[], Any], *, timeout_s: float, every_s: float, report: Callable[[str], None],
) -> tuple[Any, float]:
    """Read the drain's progress until two successive heartbeats (records of distinct ``seen_at``)
    show the host empty, or it stops heartbeating; the last progress and the seconds waited.

    Two, not one: a message popped from the host's queue just after a beat is neither queued nor
    yet in that beat's held count; the next beat counts it.
    """
    started = time.monotonic()
    empty_at: list[float | None] = []
    shown = ""
    while True:
        found = read()
        waited = time.monotonic() - started
        if not found.live:
            return found, waited
        if found.empty:
            if found.seen_at not in empty_at:
                empty_at.append(found.seen_at)
            if len(empty_at) >= 2:
                return found, waited
        else:
            empty_at.clear()
        if (line := _describe(found)) != shown:
            report(f"draining {found.host}: {line}")
            shown = line
        if waited >= timeout_s:
            raise DrainTimeout(
                f"host {found.host} still holds work after {waited:.0f} s ({line}); it stays drained "
                f"(wait again with 'dockyard drain {found.host}', or 'dockyard undrain {found.host}')"
            )
        time.sleep(every_s)


def cmd_drain(args: argparse.Namespace) -> int:
    """Drain a host: no new builds; wait (unless --no-wait) until it runs and holds nothing."""
    from dockyard.tasks.farm import drain
    from dockyard.tasks.keyspace import redis_for
    from dockyard.tasks.routing.placement import broker_redis

    settings = get_settings()
    host = check_host_id(args.host)
    connection = redis_for(settings)
    record = drain.drain(connection, settings, host, by=_operator())
    broker = broker_redis(settings)

    def read() -> Any:
        return drain.progress(connection, broker, settings, host, record["id"])

    found, waited = read(), 0.0
    if found.live and not args.no_wait:
        timeout_s = args.timeout or settings.task_time_limit_s * 2
        found, waited = wait_empty(
            read, timeout_s=timeout_s, every_s=min(1.0, settings.heartbeat_interval_s / 2),
            report=lambda line: print(line, file=sys.stderr, flush=True),
        )
    outcome = {
        "host": host, "drained": True, "drain": record, "live": found.live,
        "empty": found.empty if found.live else None, "waited_s": round(waited, 3),
        "running": found.running, "held": found.held, "queued": found.queued, "reported_at": time.time(),
    }
    if args.json:
        print(json.dumps(outcome, indent=2))
    elif not found.live:
        print(f"{host} is drained; it does not heartbeat now (it takes no new builds when its worker starts)")
    elif args.no_wait:
        print(f"{host} is drained (not waiting for it to be empty: {_describe(found)})")
    else:
        print(f"{host} is drained and empty after {waited:.1f} s: no build running, nothing queued for it")
    return 0


def cmd_undrain(args: argparse.Namespace) -> int:
    """Put a drained host back in service: it consumes the shared queues again and placement uses it."""
    from dockyard.tasks.farm import drain
    from dockyard.tasks.keyspace import redis_for

    settings = get_settings()
    host = check_host_id(args.host)
    was = drain.undrain(redis_for(settings), settings, host)
    if args.json:
        print(json.dumps({"host": host, "drained": False, "was_drained": was}, indent=2))
    else:
        print(f"{host} is in service" + ("" if was else " (it was not drained)"))
    return 0


def add_commands(sub: Any, command: Callable[..., argparse.ArgumentParser], seconds: Callable[[str], float]) -> None:
    """Add ``drain`` and ``undrain`` to the CLI's subcommands."""
    drain = command(sub, "drain", "Take a host out of service: no new builds; wait until it is empty.",
                    "Drain HOST: placement stops sending it builds, its worker stops taking builds from the "
                    "shared queues and forwards any build still queued for it to another host; builds "
                    "running there finish, and tags and pushes of images it holds still run there. Then "
                    "wait until it runs and holds nothing and nothing is queued for it (--no-wait: return "
                    "at once). It stays drained until 'dockyard undrain HOST', across restarts. An "
                    "operator command: it needs the worker Redis user.")
    drain.add_argument("host", metavar="HOST", help="the host id, as 'dockyard hosts' lists it")
    drain.add_argument("--timeout", type=seconds, default=None, metavar="SECONDS",
                       help="seconds to wait for the host to be empty (default: twice DOCKYARD_TASK_TIME_LIMIT_S); "
                            "after it, exit 1 (the host stays drained)")
    drain.add_argument("--no-wait", action="store_true", help="return once the drain is recorded")
    drain.add_argument("--json", action="store_true", help="print the outcome as JSON")
    drain.set_defaults(run=cmd_drain)

    undrain = command(sub, "undrain", "Put a drained host back in service.",
                      "Undrain HOST: its worker consumes the shared build queues again (within a heartbeat "
                      "interval) and placement sends it builds. An operator command: it needs the worker "
                      "Redis user.")
    undrain.add_argument("host", metavar="HOST", help="the host id")
    undrain.add_argument("--json", action="store_true", help="print the outcome as JSON")
    undrain.set_defaults(run=cmd_undrain)
