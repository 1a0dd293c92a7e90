"""Which of a host's images are in use, and when each was last used: what the disk budget reads.

Keys (under the prefix, per host id):

- ``used:<host>``: a sorted set, image id -> last use (unix time). A build,
  a hit, a join and a tag on the holder add the image (``note_use``); a push
  and the caller's fast-path hit only refresh an image already there
  (``refresh_use``), so nothing but dockyard's own builds ever enters it.
- ``seen:<host>``: a sorted set, image id -> last fast-path hit. Callers
  answer hits from Redis without a worker and may not write ``used:``; a
  caller's entry here only makes an image of ``used:`` look more recent
  (the later of the two times counts), never adds one to the candidates.
- ``pins:<host>:<image id>``: a sorted set, holder token -> expiry (ms). A
  task pins an image before it checks the image is there and holds the pin
  until it ends (``Pins``); a pin of a dead task expires after the task's
  time limit.
- ``evicting:<host>:<image id>``: set by the disk budget when it claims an
  image for removal. Claiming (no live pin) and pinning (no claim) are each
  one script, so a task either pins first and the image stays, or finds the
  claim and takes the image as gone (a miss: it rebuilds).

- ``evicted:<name:tag>``: the image a reference named when the budget
  removed it (a push by name then rebuilds it); it expires with the cache.

``used:`` and ``seen:`` expire ``RECORD_TTL_S`` after the host's last disk
budget pass (each pass renews them); the others expire on their own.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable

import redis

from dockyard.config.settings import Settings
from dockyard.tasks.teams.keys import TEAM_KEYS, team_key
from dockyard.tasks.keyspace import key, optional_text, text

EVICTING_S = 600  # a claim outlives the removal it announces (deleted when the removal ends)
RECORD_TTL_S = 30 * 24 * 3600  # used:/seen: of a host whose worker stopped running passes expire after this

_PIN = """
if redis.call('exists', KEYS[2]) == 1 then
  return 0
end
redis.call('zadd', KEYS[1], ARGV[2], ARGV[1])
redis.call('pexpire', KEYS[1], ARGV[3])
return 1
"""
_CLAIM = """
redis.call('zremrangebyscore', KEYS[1], '-inf', ARGV[1])
if redis.call('zcard', KEYS[1]) > 0 then
  return 0
end
redis.call('set', KEYS[2], '1', 'EX', ARGV[2])
redis.call('zrem', KEYS[3], ARGV[3])
redis.call('zrem', KEYS[4], ARGV[3])
return 1
"""


def used_key(settings: Settings, host_id: str) -> str:
    return key(settings, "used", host_id)


def pins_key(settings: Settings, host_id: str, image_id: str) -> str:
    return key(settings, "pins", host_id, image_id)


def evicting_key(settings: Settings, host_id: str, image_id: str) -> str:
    return key(settings, "evicting", host_id, image_id)


def note_use(connection: redis.Redis | redis.client.Pipeline, settings: Settings, host_id: str, image_id: str) -> None:
    """``image_id`` (built by dockyard, held by ``host_id``) was used now: one ZADD."""
    connection.zadd(used_key(settings, host_id), {image_id: time.time()})


def refresh_use(connection: redis.Redis | redis.client.Pipeline, settings: Settings, host_id: str, image_id: str) -> None:
    """``image_id`` was used now, if ``host_id`` keeps it as dockyard's (ZADD XX: never adds an image)."""
    connection.zadd(used_key(settings, host_id), {image_id: time.time()}, xx=True)


def seen_key(settings: Settings, host_id: str) -> str:
    return key(settings, "seen", host_id)


def note_hit(pipe: redis.client.Pipeline, settings: Settings, host_id: str, image_id: str) -> None:
    """A caller answered a hit with ``image_id`` of ``host_id`` now (queued on the caller's pipeline)."""
    pipe.zadd(seen_key(settings, host_id), {image_id: time.time()})


def _scores(raw: list[tuple[bytes | str, float]]) -> dict[str, float]:
    return {text(name): float(score) for name, score in raw}


def last_uses(connection: redis.Redis, settings: Settings, host_id: str) -> dict[str, float]:
    """Every image ``host_id`` keeps as dockyard's, with its last use (a caller's later hit counts)."""
    pipe = connection.pipeline(transaction=False)
    pipe.zrange(used_key(settings, host_id), 0, -1, withscores=True)
    pipe.zrange(seen_key(settings, host_id), 0, -1, withscores=True)
    pipe.expire(used_key(settings, host_id), RECORD_TTL_S)  # kept while the host's worker runs passes
    pipe.expire(seen_key(settings, host_id), RECORD_TTL_S)
    used_raw, seen_raw, _used_ttl, _seen_ttl = pipe.execute()
    used, seen = _scores(used_raw), _scores(seen_raw)
    strays = [image_id for image_id in seen if image_id not in used]
    if strays:
        connection.zrem(seen_key(settings, host_id), *strays)
    return {image_id: max(when, seen.get(image_id, 0.0)) for image_id, when in used.items()}


def drop_use(connection: redis.Redis, settings: Settings, host_id: str, image_ids: Iterable[str]) -> None:
    """Stop keeping these images as dockyard's on ``host_id`` (they left its engine)."""
    names = list(image_ids)
    if names:
        pipe = connection.pipeline(transaction=False)
        pipe.zrem(used_key(settings, host_id), *names)
        pipe.zrem(seen_key(settings, host_id), *names)
        pipe.execute()


def evicted_key(settings: Settings, reference: str) -> str:
    """The image ``reference`` of ``settings.team`` named when the disk budget removed it."""
    return team_key(settings, "evicted", reference)


def remember_evicted(
    connection: redis.Redis, settings: Settings, references: Iterable[tuple[str, str]], image_id: str
) -> None:
    """These (team, reference) pairs named ``image_id`` when the disk budget removed it: a push of one
    of them by name rebuilds that image (``dockyard.tasks.farm.rebuild``) instead of failing. Expires with the cache."""
    names = list(references)
    if names:
        pipe = connection.pipeline(transaction=False)
        for team, reference in names:
            pipe.set(key(settings, TEAM_KEYS, team, "evicted", reference), image_id, ex=settings.cache_ttl_s)
        pipe.execute()


def evicted_image(connection: redis.Redis, settings: Settings, reference: str) -> str | None:
    """The image ``reference`` named when the disk budget removed it, or None."""
    found = connection.get(evicted_key(settings, reference))
    return optional_text(found)


def claim_for_eviction(connection: redis.Redis, settings: Settings, host_id: str, image_id: str) -> bool:
    """Mark ``image_id`` as being removed unless a live task pins it; it leaves ``used:``/``seen:`` too. Atomic."""
    return bool(connection.eval(
        _CLAIM, 4, pins_key(settings, host_id, image_id), evicting_key(settings, host_id, image_id),
        used_key(settings, host_id), seen_key(settings, host_id), int(time.time() * 1000), EVICTING_S, image_id,
    ))


def end_eviction(connection: redis.Redis, settings: Settings, host_id: str, image_id: str) -> None:
    """The removal of ``image_id`` is over: a later pin succeeds (and finds the image gone, or rebuilt)."""
    connection.delete(evicting_key(settings, host_id, image_id))


class Pins:
    """One task's pins on this host's images, released together when the task ends."""

    def __init__(self, connection: redis.Redis, settings: Settings) -> None:
        self.connection = connection
        self.settings = settings
        self.token = secrets.token_hex(8)
        self.held: list[str] = []
        self.hold_ms = int((settings.task_time_limit_s + settings.lease_s) * 1000)  # a dead task's pin expires

    def pin(self, image_id: str) -> bool:
        """Keep ``image_id`` from eviction until ``release``; False if it is being evicted (take it as gone)."""
        host = self.settings.host_id
        pinned = bool(self.connection.eval(
            _PIN, 2, pins_key(self.settings, host, image_id), evicting_key(self.settings, host, image_id),
            self.token, int(time.time() * 1000) + self.hold_ms, self.hold_ms,
        ))
        if pinned:
            self.held.append(image_id)
        return pinned

    def release(self) -> None:
        """Give up every pin this holder took."""
        if not self.held:
            return
        pipe = self.connection.pipeline(transaction=False)
        for image_id in self.held:
            pipe.zrem(pins_key(self.settings, self.settings.host_id, image_id), self.token)
        pipe.execute()
        self.held.clear()

    def __enter__(self) -> Pins:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()
