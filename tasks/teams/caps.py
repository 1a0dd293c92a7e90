"""Caps on a team's running builds: a running set with leases; builds over the cap parked, then released.

A team with ``max_running = N`` in the teams file (``dockyard.config.teams``)
never has more than N builds running on the farm. Before a build runs in a
build lane (``dockyard.tasks.celery_tasks.DockyardTask``), its worker takes a
slot of the team's running set (``acquire``); the slot is a lease, renewed
while the build runs (``Slot``) and given back when it ends. At the cap the
build is *parked* (``park``): its signature (task id, retries, chain and
callbacks kept, as a retry keeps them) goes to the team's parked list and
its message is acknowledged, so it holds no worker slot. When one of the
team's builds ends, its worker releases as many parked builds, oldest first,
as the team has free slots (``release``): each gets a reservation in the
running set (so a build arriving meanwhile does not take its slot) and is
sent again to the queue it came from (the team's shared queue when that was
the queue of a host that is gone). Every build worker's heartbeat releases
too (``release_all``): a build whose worker died ends nowhere, its lease
expires after ``lease_s`` and the next beat releases in its place.

Nothing parked is lost: a build leaves the parked list only after it was sent
again; a worker that dies between the two sends it twice, which is harmless
(single flight: the second is a join or a hit, and a duplicate task id holds
the slot of the first).

Keys (the farm's keyspace, written by workers only; a team's Redis user may
neither read nor write them, ``dockyard.workers.redis_acl``), one set per pool
(``build_queue``): the workers of a pool share one teams file and one count of
slots, and a pool never releases another pool's parked builds:

- ``running:<pool>:<team>``: sorted set, task id -> expiry (Redis server time, s) of
  its slot: a running build's lease (``lease_s``, renewed every third of it)
  or a released build's reservation (``RESERVATION_S``); expired members are
  dropped by the next acquire or release;
- ``parked:<pool>:<team>``: list of parked builds, newest left, oldest right
  (JSON ``{"id", "queue", "signature", "at"}``);
- ``releasing:<pool>:<team>``: lock, one releasing worker per team at a time
  (``RELEASE_LOCK_S``).

Costs: nothing for a team without ``max_running``; for a capped team, one
script call before each build, a renewal every ``lease_s / 3`` while it
runs, a release after it, an ``LLEN`` per capped team at each heartbeat;
a parked build is sent twice (the caller's message, then the release).
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

import redis

from dockyard.config import defaults
from dockyard.config.settings import Settings, farm_queue, queue_team, team_queue
from dockyard.config.teams import Team
from dockyard.tasks.keyspace import key

RESERVATION_S = 30.0  # a released build holds its slot this long until its worker takes it
RELEASE_LOCK_S = 10.0  # one worker releases a team's parked builds at a time; a dead one's lock expires
KEY_TTL_S = 7 * 24 * 3600  # a team's cap keys go this long after their last use

logger = logging.getLogger("dockyard.caps")

Publish = Callable[[Mapping[str, Any]], None]  # sends a parked build's signature again (``queue_after`` its queue)

# KEYS: running set. ARGV: member, cap, lease ms, key ttl s. 1 if member holds a slot now (taken or kept).
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local held = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not held and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]) / 1000, ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
"""

# KEYS: running set. ARGV: member, lease ms, key ttl s. The member's slot extended (added back if it expired).
_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]) / 1000, ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""

# KEYS: running set. ARGV: cap. Free slots now (expired members dropped).
_FREE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return tonumber(ARGV[1]) - redis.call('ZCARD', KEYS[1])
"""

_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def running_key(settings: Settings, team: str) -> str:
    return key(settings, "running", settings.build_queue, team)


def parked_key(settings: Settings, team: str) -> str:
    return key(settings, "parked", settings.build_queue, team)


def releasing_key(settings: Settings, team: str) -> str:
    return key(settings, "releasing", settings.build_queue, team)


def capped_teams(settings: Settings) -> dict[str, int]:
    """The declared teams with a cap, and their caps."""
    return {name: team.max_running for name, team in settings.declared_teams.teams.items() if team.max_running is not None}


def reserves(settings: Settings) -> bool:
    """Whether a team may be held to the pool's slots minus a reserve for the others: fair share on,
    a reserve fraction, and more than one declared team."""
    return settings.fair_share and settings.fair_reserve_fraction > 0 and len(settings.declared_teams.teams) > 1


def team_cap(settings: Settings, team: Team, *, slots: Callable[[], int]) -> int | None:
    """The most builds ``team`` may run at once now: its ``max_running``, and, while ``reserves``, the
    pool's ``slots()`` minus ``int(slots * fair_reserve_fraction)`` (no reserve on a pool too small
    to keep one); the smaller of the two, or None (no cap)."""
    found = [team.max_running] if team.max_running is not None else []
    if reserves(settings):
        total = slots()
        reserve = int(total * settings.fair_reserve_fraction)
        if reserve > 0:
            found.append(total - reserve)
    return min(found) if found else None


def may_park(settings: Settings) -> bool:
    """Whether a build of this farm may ever be parked (a worker then releases parked builds at each beat)."""
    return bool(capped_teams(settings)) or reserves(settings)


def acquire(connection: redis.Redis, settings: Settings, team: str, task_id: str, cap: int) -> bool:
    """A slot of ``team``'s running set for ``task_id`` (its reservation, if it was released, becomes
    its lease); False at the cap."""
    lease_ms = max(1, int(settings.lease_s * 1000))
    return bool(connection.eval(_ACQUIRE, 1, running_key(settings, team), task_id, cap, lease_ms, KEY_TTL_S))


def renew(connection: redis.Redis, settings: Settings, team: str, task_id: str) -> None:
    lease_ms = max(1, int(settings.lease_s * 1000))
    connection.eval(_RENEW, 1, running_key(settings, team), task_id, lease_ms, KEY_TTL_S)


def finish(connection: redis.Redis, settings: Settings, team: str, task_id: str) -> None:
    """``task_id``'s build ended: its slot is free."""
    connection.zrem(running_key(settings, team), task_id)


def running(connection: redis.Redis, settings: Settings, team: str) -> list[str]:
    """The task ids holding a slot of ``team`` now (running or released), expired ones left out."""
    members: list[bytes] = connection.zrangebyscore(running_key(settings, team), time.time(), "+inf")  # type: ignore[assignment]
    return [member.decode() for member in members]


def parked(connection: redis.Redis, settings: Settings, team: str) -> int:
    """How many of ``team``'s builds are parked."""
    return int(connection.llen(parked_key(settings, team)))


def park(connection: redis.Redis, settings: Settings, team: str, task_id: str, queue: str, signature: Mapping[str, Any]) -> None:
    """``task_id``'s build waits for a slot of ``team``: its signature is kept until a release sends it again."""
    entry = json.dumps({"id": task_id, "queue": queue, "signature": dict(signature), "at": time.time()})
    pipe = connection.pipeline(transaction=True)
    pipe.lpush(parked_key(settings, team), entry)
    pipe.expire(parked_key(settings, team), KEY_TTL_S)
    pipe.execute()


def _reserve(connection: redis.Redis, settings: Settings, team: str, task_id: str, cap: int) -> bool:
    reservation_ms = int(RESERVATION_S * 1000)
    return bool(connection.eval(_ACQUIRE, 1, running_key(settings, team), task_id, cap, reservation_ms, KEY_TTL_S))


def queue_after(queue: str, settings: Settings, *, alive: Callable[[str], bool]) -> str:
    """Where a parked build goes again: the queue it came from, unless that is the queue of a host
    that is gone (``alive`` says no), then its team's shared queue."""
    farm = farm_queue(queue)
    team = queue_team(queue)
    if farm.startswith(defaults.HOST_QUEUE_PREFIX) and team is not None and not alive(farm[len(defaults.HOST_QUEUE_PREFIX):]):
        return team_queue(settings.build_queue, team)
    return queue


def release(connection: redis.Redis, settings: Settings, team: str, cap: int, publish: Publish) -> int:
    """Send again ``team``'s oldest parked builds, one per free slot (each with a reservation); how many.

    0 when another worker is releasing the team's builds now (it sees the same free slots)."""
    lock, token = releasing_key(settings, team), secrets.token_hex(8)
    if not connection.set(lock, token, nx=True, px=int(RELEASE_LOCK_S * 1000)):
        return 0
    released = 0
    try:
        while int(connection.eval(_FREE, 1, running_key(settings, team), cap)) > 0:
            raw: bytes | None = connection.lindex(parked_key(settings, team), -1)  # type: ignore[assignment]
            if raw is None:
                break
            entry = json.loads(raw)
            if not _reserve(connection, settings, team, str(entry["id"]), cap):
                break
            signature = {**entry["signature"]}
            signature["options"] = {**signature.get("options", {}), "queue": str(entry["queue"])}
            publish(signature)
            connection.lrem(parked_key(settings, team), -1, raw.decode())  # an entry is ASCII JSON
            released += 1
    finally:
        connection.eval(_UNLOCK, 1, lock, token)
    if released:
        logger.info("released %d parked builds of team %s", released, team)
    return released


def release_all(connection: redis.Redis, settings: Settings, publish: Publish, *, slots: Callable[[], int]) -> int:
    """Release the parked builds of every team that has free slots (a worker's heartbeat); a team that
    has parked builds and no cap any more gets them all back."""
    released = 0
    for name, team in settings.declared_teams.teams.items():
        waiting = parked(connection, settings, name)
        if waiting:
            cap = team_cap(settings, team, slots=slots)
            limit = cap if cap is not None else waiting + len(running(connection, settings, name))
            released += release(connection, settings, name, limit, publish)
    return released


class Slot:
    """A build's slot of its team's running set, renewed every third of ``lease_s`` for a ``with`` block;
    at its end the slot is freed and the team's parked builds released into it."""

    def __init__(
        self, connection: redis.Redis, settings: Settings, team: str, task_id: str, *, cap: int, publish: Publish
    ) -> None:
        self.connection, self.settings, self.team, self.task_id = connection, settings, team, task_id
        self.cap, self.publish = cap, publish
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"slot-{task_id}", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.settings.lease_s / 3):
            try:
                renew(self.connection, self.settings, self.team, self.task_id)
            except redis.RedisError as exc:  # a blip: the next renewal may still land before expiry
                logger.warning("slot of %s (team %s) not renewed: %s", self.task_id, self.team, exc)

    def __enter__(self) -> Slot:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()
        try:
            finish(self.connection, self.settings, self.team, self.task_id)
            release(self.connection, self.settings, self.team, self.cap, self.publish)
        except redis.RedisError as exc:  # the slot's lease expires; a heartbeat releases the parked builds
            logger.warning("slot of %s (team %s) not given back: %s", self.task_id, self.team, exc)
