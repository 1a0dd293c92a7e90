"""Build history in Redis: each team's records under its own keys, bounded by count and age.

Keys (in the team's namespace, ``dockyard.tasks.teams.keys``):
``team:<team>:history`` is a sorted set of record ids scored by when each
finished; ``team:<team>:history:<id>`` is the record's JSON, expiring with the
age bound. A team's Redis user reads its own; an operator reads every team's.
``team:<team>:inflight`` is a hash of what runs now (id -> ``InFlight`` JSON),
removed when the record is written. Writing is best effort: a Redis error never fails the build it records.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import redis
from pydantic import ValidationError

from dockyard.config.settings import Settings
from dockyard.tasks.history.record import BuildRecord, InFlight
from dockyard.tasks.keyspace import key
from dockyard.tasks.teams.keys import TEAM_KEYS

HISTORY = "history"
IN_FLIGHT = "inflight"
IN_FLIGHT_TTL_S = 3 * 3600  # a running mark its worker never removed (killed) goes away: above the task time limit
READ_BATCH = 200  # records fetched per round trip when listing


def index_key(settings: Settings, team: str) -> str:
    """The sorted set of ``team``'s record ids, scored by finish time."""
    return key(settings, TEAM_KEYS, team, HISTORY)


def record_key(settings: Settings, team: str, record_id: str) -> str:
    """One record of ``team``."""
    return key(settings, TEAM_KEYS, team, HISTORY, record_id)


def save(connection: redis.Redis, settings: Settings, record: BuildRecord) -> bool:
    """Write ``record`` into its team's history and apply the bounds; False if Redis did not take it."""
    index = index_key(settings, record.team)
    cutoff = time.time() - settings.history_max_age_s
    try:
        pipe = connection.pipeline(transaction=False)
        pipe.set(record_key(settings, record.team, record.id), record.model_dump_json(),
                 ex=max(1, int(record.finished_at + settings.history_max_age_s - time.time())))
        pipe.zadd(index, {record.id: record.finished_at})
        pipe.zremrangebyscore(index, "-inf", f"({cutoff}")
        pipe.zrange(index, 0, -settings.history_max_records - 1)
        dropped = pipe.execute()[-1]
        if dropped:
            pipe = connection.pipeline(transaction=False)
            pipe.zrem(index, *dropped)
            pipe.delete(*(record_key(settings, record.team, _text(each)) for each in dropped))
            pipe.execute()
        return True
    except redis.RedisError:
        return False


def load(connection: redis.Redis, settings: Settings, team: str, record_id: str) -> BuildRecord | None:
    """``team``'s record ``record_id``, or None if it is not (or no longer) kept."""
    raw = connection.get(record_key(settings, team, record_id))
    return _parse(raw)


def recent(
    connection: redis.Redis, settings: Settings, teams: Iterable[str], *,
    since: float | None = None, limit: int | None = None,
) -> list[BuildRecord]:
    """The records of ``teams`` finished at or after ``since``, newest first, at most ``limit``."""
    records: list[BuildRecord] = []
    low = "-inf" if since is None else since
    for team in teams:
        ids: list[bytes | str] = connection.zrevrangebyscore(  # type: ignore[assignment]  # no scores asked
            index_key(settings, team), "+inf", low, start=0 if limit is not None else None, num=limit,
        )
        for start in range(0, len(ids), READ_BATCH):
            batch = [record_key(settings, team, _text(each)) for each in ids[start:start + READ_BATCH]]
            records.extend(record for raw in connection.mget(batch) if (record := _parse(raw)) is not None)
    records.sort(key=lambda record: record.finished_at, reverse=True)
    return records[:limit] if limit is not None else records


def find(connection: redis.Redis, settings: Settings, teams: Iterable[str], record_id: str) -> BuildRecord | None:
    """The record ``record_id`` in whichever of ``teams`` holds it."""
    for team in teams:
        if (record := load(connection, settings, team, record_id)) is not None:
            return record
    return None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _parse(raw: bytes | str | None) -> BuildRecord | None:
    """A stored record, or None if it is missing or does not read (a record is never trusted blindly)."""
    if raw is None:
        return None
    try:
        return BuildRecord.model_validate_json(raw)
    except ValidationError:
        return None


def in_flight_key(settings: Settings, team: str) -> str:
    """The hash of ``team``'s builds and pushes running now."""
    return key(settings, TEAM_KEYS, team, IN_FLIGHT)


def started(connection: redis.Redis, settings: Settings, running: InFlight) -> bool:
    """Mark ``running`` as in flight; False if Redis did not take it."""
    try:
        pipe = connection.pipeline(transaction=False)
        pipe.hset(in_flight_key(settings, running.team), running.id, running.model_dump_json())
        pipe.expire(in_flight_key(settings, running.team), IN_FLIGHT_TTL_S)
        pipe.execute()
        return True
    except redis.RedisError:
        return False


def finished(connection: redis.Redis, settings: Settings, record: BuildRecord) -> bool:
    """Save ``record`` and clear its in-flight mark; False if Redis did not take it."""
    saved = save(connection, settings, record)
    try:
        connection.hdel(in_flight_key(settings, record.team), record.id)
    except redis.RedisError:
        return False
    return saved


def running_now(connection: redis.Redis, settings: Settings, teams: Iterable[str]) -> list[InFlight]:
    """What ``teams`` run now, oldest first (marks that do not read are left out)."""
    found: list[InFlight] = []
    for team in teams:
        for raw in connection.hvals(in_flight_key(settings, team)):
            try:
                found.append(InFlight.model_validate_json(raw))
            except ValidationError:
                continue
    return sorted(found, key=lambda each: each.started_at)
