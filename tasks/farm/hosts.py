"""Build hosts in Redis: heartbeats with expiry, and where each image lives.

Keys: ``hosts:<host_id>`` (the host's record, expiring unless renewed; its ``drained`` field
is what placement reads of a drain, ``dockyard.tasks.farm.drain``),
``image:<name:tag>`` (``{"host", "image_id"}``: where that reference was
built or tagged), and ``byimage:<host_id>:<image_id>`` (the image
references and cache keys that point at that image on that host, so they can
be dropped when the image is deleted).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from typing import Any

import redis

from dockyard.config.settings import Settings
from dockyard.tasks.farm import image_use
from dockyard.tasks.teams.keys import TEAM_KEYS, team_key
from dockyard.tasks.teams.pushing import note_owned
from dockyard.tasks.keyspace import key, text


def beat(connection: redis.Redis, settings: Settings, host_id: str, info: dict[str, Any]) -> None:
    """Say ``host_id`` is alive for the next ``heartbeat_ttl_s`` seconds (and list it in the hosts index)."""
    now = time.time()
    record = {**info, "host": host_id, "seen_at": now}
    pipe = connection.pipeline(transaction=False)
    pipe.set(host_key(settings, host_id), json.dumps(record), px=int(settings.heartbeat_ttl_s * 1000))
    pipe.zadd(hosts_index_key(settings), {host_id: now})
    pipe.zremrangebyscore(hosts_index_key(settings), "-inf", now - settings.cache_ttl_s)
    pipe.execute()


def hosts_index_key(settings: Settings) -> str:
    """``hosts-index``: every host that beat lately, scored by its last beat (read without a SCAN)."""
    return key(settings, "hosts-index")


def forget_host(connection: redis.Redis, settings: Settings, host_id: str) -> None:
    connection.delete(host_key(settings, host_id))


def mark_drained(connection: redis.Redis, settings: Settings, host_id: str, drained: bool) -> None:
    """Set ``drained`` in ``host_id``'s record now, its expiry kept (nothing if it does not heartbeat):
    placement sees a drain before the host's next beat, which writes the field again."""
    raw = connection.get(host_key(settings, host_id))
    if raw:
        record = {**json.loads(raw), "drained": drained}
        connection.set(host_key(settings, host_id), json.dumps(record), keepttl=True, xx=True)


def host_key(settings: Settings, host_id: str) -> str:
    """The key of ``host_id``'s heartbeat record (to read it with other commands in one round trip)."""
    return key(settings, "hosts", host_id)


def is_alive(connection: redis.Redis, settings: Settings, host_id: str) -> bool:
    return bool(connection.exists(host_key(settings, host_id)))


def live_hosts(connection: redis.Redis, settings: Settings) -> list[dict[str, Any]]:
    """The records of every host that heartbeats, sorted by host id."""
    names = sorted(connection.scan_iter(match=host_key(settings, "*"), count=500))
    records = connection.mget(names) if names else []
    return [json.loads(raw) for raw in records if raw]


def pool_slots(connection: redis.Redis, settings: Settings) -> int:
    """The build slots (``concurrency``) of this pool's live, undrained hosts, from the hosts index
    and their records (two round trips, no SCAN)."""
    now = time.time()
    found: list[bytes | str] = connection.zrangebyscore(hosts_index_key(settings), now - settings.heartbeat_ttl_s, "+inf")  # type: ignore[assignment]
    names = [text(name) for name in found]
    records = connection.mget([host_key(settings, name) for name in names]) if names else []
    slots = 0
    for raw in records:
        record = json.loads(raw) if raw else None
        if record and record.get("build_queue", settings.build_queue) == settings.build_queue and not record.get("drained"):
            slots += max(1, int(record.get("concurrency") or 1))
    return slots


def record_image(
    connection: redis.Redis,
    settings: Settings,
    *,
    host_id: str,
    image_id: str,
    references: Iterable[str],
    cache_keys: Iterable[str] = (),
    used: bool = False,
) -> None:
    """Remember that ``references`` name ``image_id`` on ``host_id``; ``used``: and that it was used now
    (its last use for the disk budget, ``dockyard.tasks.farm.image_use``, in the same round trip)."""
    location = json.dumps({"host": host_id, "image_id": image_id})
    index = key(settings, "byimage", host_id, image_id)
    pipe = connection.pipeline(transaction=False)
    members = []
    for reference in references:
        pipe.set(location_key(settings, reference), location, ex=settings.cache_ttl_s)
        members.append(location_key(settings, reference).removeprefix(settings.key_prefix))
    members.extend(cache_keys)
    if members:
        pipe.sadd(index, *members)
        pipe.expire(index, settings.cache_ttl_s)
    if used:
        image_use.note_use(pipe, settings, host_id, image_id)
    note_owned(pipe, settings, image_id)  # the team had it: it may push it (dockyard.tasks.teams.pushing)
    pipe.execute()


def location_key(settings: Settings, reference: str) -> str:
    """Where ``reference`` of ``settings.team`` lives: a team's tags are its own (two teams may use one name)."""
    return team_key(settings, "image", reference)


def location_keys(settings: Settings, references: list[str]) -> list[str]:
    """The keys of the references' locations (to read them with other keys in one round trip)."""
    return [location_key(settings, reference) for reference in references]


def _team_reference(member: str) -> tuple[str, str] | None:
    """(team, reference) of a ``byimage:`` member naming a location (``team:<team>:image:<reference>``)."""
    parts = member.split(":", 3)
    if len(parts) == 4 and parts[0] == TEAM_KEYS and parts[2] == "image":
        return parts[1], parts[3]
    return None


def parse_locations(raws: Sequence[bytes | str | None]) -> list[dict[str, Any] | None]:
    """Locations read from ``location_keys``: ``{"host", "image_id"}`` or None."""
    return [json.loads(raw) if raw else None for raw in raws]


def locate_images(connection: redis.Redis, settings: Settings, references: list[str]) -> list[dict[str, Any] | None]:
    """Where each reference lives, or None."""
    if not references:
        return []
    return parse_locations(connection.mget(location_keys(settings, references)))


def recorded_images(connection: redis.Redis, settings: Settings, host_id: str) -> list[str]:
    """The image ids ``host_id`` is recorded as holding (its ``byimage:`` index sets), sorted."""
    prefix = key(settings, "byimage", host_id, "")
    pattern = _glob_escape(prefix) + "*"
    found = (text(name).removeprefix(prefix) for name in connection.scan_iter(match=pattern, count=500))
    # the index of a host whose id extends this one (``a:b`` for ``a``) is not this host's: an id has one colon
    return sorted({image_id for image_id in found if image_id.count(":") <= 1})



def _glob_escape(text: str) -> str:
    """``text`` matched literally in a Redis ``SCAN MATCH`` pattern."""
    return "".join("\\" + char if char in "*?[]\\" else char for char in text)


def located_references(connection: redis.Redis, settings: Settings, *, host_id: str, image_id: str) -> list[tuple[str, str]]:
    """The (team, reference) pairs of ``image_id``'s index whose location is still that image on that host."""
    index = key(settings, "byimage", host_id, image_id)
    named = [found for member in connection.smembers(index) if (found := _team_reference(text(member))) is not None]
    if not named:
        return []
    raws = connection.mget([key(settings, TEAM_KEYS, team, "image", reference) for team, reference in named])
    here = {"host": host_id, "image_id": image_id}
    return [pair for pair, location in zip(named, parse_locations(raws)) if location == here]


def forget_image(connection: redis.Redis, settings: Settings, *, host_id: str, image_id: str) -> int:
    """Drop every reference and cache entry that points at ``image_id`` on ``host_id``."""
    index = key(settings, "byimage", host_id, image_id)
    members = [text(member) for member in connection.smembers(index)]
    doomed = [index]
    for member in members:
        if (named := _team_reference(member)) is not None:
            reference_key = key(settings, TEAM_KEYS, named[0], "image", named[1])
            raw = connection.get(reference_key)
            if raw and json.loads(raw) == {"host": host_id, "image_id": image_id}:
                doomed.append(reference_key)
        else:
            doomed.append(member)
    return int(connection.delete(*doomed))
