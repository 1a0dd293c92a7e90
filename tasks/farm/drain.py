"""Drained hosts: a host an operator takes out of service finishes its work and takes no new builds.

Keys: ``drained:<host_id>`` (JSON ``{"id", "at", "by"}``, no expiry: a drain lasts until
``undrain``, across restarts of the host's worker). Only operators and workers (the farm's
worker or admin Redis user) write it; a team's Redis user may neither write nor read it
(``dockyard.workers.redis_acl``), so no team can drain or undrain a host.

Callers never read the key: placement (``dockyard.tasks.routing.placement``) reads the host
record's ``drained`` field (``hosts:<host_id>``, which teams read by exact key). The host's
heartbeat copies the drain into its record at every beat (``record_fields``), and ``drain`` and
``undrain`` also set that field in the record at once (``dockyard.tasks.farm.hosts.mark_drained``),
so placement skips a drained host from the next build routed on.

What a drained host's worker does (``dockyard.workers.heartbeat``, ``dockyard.tasks.celery_tasks``):
it cancels its consumers of the shared build queues, forwards each build it still pops to another
host (or the shared queue), finishes the builds it runs, and still runs the tags and pushes of
images it holds. Its record says how far it is: ``drain`` (the drain it saw, by id),
``consuming_shared``, ``running`` and ``held`` (messages received and not finished); ``empty``
reads them with the length of its own queues.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from dockyard.config.settings import Settings, fast_queue, host_queue, team_queue
from dockyard.tasks.farm import hosts
from dockyard.tasks.keyspace import key


def drain_key(settings: Settings, host_id: str) -> str:
    """``drained:<host_id>``: the drain of ``host_id``, until it is undrained."""
    return key(settings, "drained", host_id)


def drain(connection: redis.Redis, settings: Settings, host_id: str, *, by: str = "operator") -> dict[str, Any]:
    """Drain ``host_id`` (again: a new drain id); its record says so at once if it heartbeats. The drain."""
    record = {"id": uuid.uuid4().hex, "at": time.time(), "by": by}
    connection.set(drain_key(settings, host_id), json.dumps(record))
    hosts.mark_drained(connection, settings, host_id, True)
    return record


def undrain(connection: redis.Redis, settings: Settings, host_id: str) -> bool:
    """Put ``host_id`` back in service; False if it was not drained."""
    removed = bool(connection.delete(drain_key(settings, host_id)))
    hosts.mark_drained(connection, settings, host_id, False)
    return removed


def parse(raw: bytes | str | None) -> dict[str, Any] | None:
    """A drain read from ``drain_key``, or None (not drained; an unreadable value counts as drained)."""
    if raw is None:
        return None
    try:
        found = json.loads(raw)
    except ValueError:
        found = None
    return found if isinstance(found, dict) else {"id": None, "at": None, "by": None}


def drained(connection: redis.Redis, settings: Settings, host_id: str) -> dict[str, Any] | None:
    """``host_id``'s drain, or None if it is in service."""
    raw: bytes | str | None = connection.get(drain_key(settings, host_id))
    return parse(raw)


def drains(connection: redis.Redis, settings: Settings, host_ids: Sequence[str]) -> dict[str, dict[str, Any] | None]:
    """The drain of each of ``host_ids`` (None: in service), in one round trip."""
    if not host_ids:
        return {}
    raws = connection.mget([drain_key(settings, host) for host in host_ids])
    return {host: parse(raw) for host, raw in zip(host_ids, raws)}


def record_fields(
    current: Mapping[str, Any] | None, *, consuming_shared: bool | None, running: int, held: int
) -> dict[str, Any]:
    """What a heartbeat adds to its host record: drained or not (placement reads ``drained``), the
    drain it saw, whether it still consumes the shared queues, and its running and held messages."""
    return {
        "drained": current is not None,
        "drain": dict(current) if current is not None else None,
        "consuming_shared": consuming_shared,
        "running": running,
        "held": held,
    }


def own_queues(host_id: str, teams: Sequence[str]) -> list[str]:
    """The queues only ``host_id``'s workers consume: its host queue and fast queue of each team."""
    return [team_queue(queue, team) for team in teams for queue in (host_queue(host_id), fast_queue(host_id))]


@dataclass(frozen=True)
class Progress:
    """How far the drain of one host is, from its record and the length of its own queues."""

    host: str
    live: bool  # the host heartbeats
    seen: bool  # its worker has seen this drain (its record names it)
    consuming_shared: bool | None
    running: int
    held: int
    queued: int
    seen_at: float | None

    @property
    def empty(self) -> bool:
        """The worker saw the drain, consumes no shared queue, holds nothing, and nothing waits for it."""
        return self.live and self.seen and self.consuming_shared is False and self.held == 0 and self.queued == 0


def progress(
    connection: redis.Redis, broker: redis.Redis | None, settings: Settings, host_id: str, drain_id: str | None
) -> Progress:
    """The drain ``drain_id`` of ``host_id`` now: its record (as its last heartbeat wrote it) and its queues."""
    raw: bytes | str | None = connection.get(hosts.host_key(settings, host_id))
    record: dict[str, Any] = json.loads(raw) if raw else {}
    teams = record.get("teams")
    names = [str(each) for each in teams] if isinstance(teams, list) and teams else [settings.team]
    queued = 0
    if broker is not None:
        pipe = broker.pipeline(transaction=False)
        for queue in own_queues(host_id, names):
            pipe.llen(queue)
        queued = sum(int(count) for count in pipe.execute())
    seen_drain = record.get("drain")
    return Progress(
        host=host_id,
        live=bool(record),
        seen=isinstance(seen_drain, dict) and seen_drain.get("id") == drain_id,
        consuming_shared=record.get("consuming_shared"),
        running=int(record.get("running") or 0),
        held=int(record.get("held") or 0),
        queued=queued,
        seen_at=record.get("seen_at"),
    )
