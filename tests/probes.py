"""Readers of dockyard's state that only tests use: kept out of the production modules."""

from __future__ import annotations

import io
import time
from typing import IO, Any

import redis

from dockyard.config.settings import Settings
from dockyard.tasks.cache.single_flight import Entry, SingleFlight
from dockyard.tasks.context.digest import ArchiveDigest
from dockyard.tasks.context.store import meta_key
from dockyard.tasks.engine import disk_usage
from dockyard.tasks.request.naming import validate_tag
from dockyard.tasks.request.sealing import SEALED_KEY
from dockyard.tasks.routing.placement import Lineage, _builders, lineage_key
from dockyard.tasks.errors import InvalidInput


def validate_tags(tags: list[str], additional_tags: object = None) -> None:
    """Validate ``tags`` and ``additional_tags`` (a list of tags or None), as the specs do."""
    if additional_tags is not None and not isinstance(additional_tags, list):
        raise InvalidInput("additional_tags must be a list of tags.")
    for tag in [*tags, *(additional_tags or [])]:
        validate_tag(tag)


def has_context(connection: redis.Redis, settings: Settings, digest: str) -> bool:
    """The context store holds ``digest``."""
    return bool(connection.exists(meta_key(settings, digest)))


def is_sealed(value: object) -> bool:
    """``value`` has the shape ``seal`` gives."""
    return isinstance(value, dict) and set(value) == {SEALED_KEY}


def archive_digest(fileobj: IO[bytes]) -> str:
    """The context digest of the tar read from ``fileobj`` (from its position to its end)."""
    digest = ArchiveDigest()
    while block := fileobj.read(1024 * 1024):
        digest.update(block)
    return digest.hexdigest()


def bytes_digest(data: bytes) -> str:
    """The context digest of a tar held in memory."""
    return archive_digest(io.BytesIO(data))


def store_entry(
    flight: SingleFlight, cache_key: str, value: Any, *, host: str | None = None, token: str = "", owner: str | None = None
) -> Entry:
    """Write an entry unconditionally, outside single flight."""
    entry = Entry(value, host or flight.settings.host_id, time.time(), token, owner)
    flight.connection.set(flight.entry_key(cache_key), entry.to_json(), ex=flight.settings.cache_ttl_s)
    return entry


def lease_held(flight: SingleFlight, cache_key: str) -> bool:
    """Someone holds the lease of ``cache_key``."""
    return flight.lease(cache_key).held_by_anyone()


def builders(connection: redis.Redis, settings: Settings, lineage: Lineage) -> dict[str, float]:
    """The hosts that built ``lineage``, with when each last did."""
    return _builders(connection.hgetall(lineage_key(settings, lineage)))


def forget_layers() -> None:
    """Forget every image's layers read so far (tests reuse image ids)."""
    with disk_usage._known_lock:
        disk_usage._known.clear()
