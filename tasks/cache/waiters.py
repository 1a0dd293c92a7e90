"""Who waits for a running build: each joiner's mark in its team's namespace, read by a cancelled owner.

Key (the team's namespace, ``dockyard.tasks.teams.keys``):

- ``team:<team>:waiting:<build key>``: a sorted set, one member per waiting call (a random id), scored
  with the time its mark lapses; the key expires with its last mark.

A joiner (a worker's task waiting for the owner's lease, or a caller joining
without a task) marks itself while it waits and removes its mark when it stops;
a mark it failed to remove lapses after ``mark_ttl_s``. A build whose caller
cancelled it goes on while any team's set holds a live mark
(``dockyard.tasks.worker.cancel_watch``): it stops only when no one waits.
"""

from __future__ import annotations

import logging
import secrets
import time
from types import TracebackType

import redis

from dockyard.config.settings import Settings
from dockyard.tasks.keyspace import key
from dockyard.tasks.teams.keys import TEAM_KEYS

logger = logging.getLogger("dockyard.cache")


def mark_ttl_s(settings: Settings) -> float:
    """How long a waiter's mark lives unrenewed: a waiter renews it at least every ``wait_wake_s``."""
    return 3 * settings.wait_wake_s + 2


def waiting_key(settings: Settings, cache_key: str, *, team: str | None = None) -> str:
    """The waiters' set of ``cache_key`` in ``team``'s namespace (default ``settings.team``)."""
    return key(settings, TEAM_KEYS, team or settings.team, "waiting", cache_key)


class Waiting:
    """A waiting call's mark on a build key, for the life of a ``with`` block; ``renew`` it while waiting."""

    def __init__(self, connection: redis.Redis, settings: Settings, cache_key: str) -> None:
        self.connection = connection
        self.name = waiting_key(settings, cache_key)
        self.member = secrets.token_hex(8)
        self.ttl_s = mark_ttl_s(settings)
        self._renewed_at = float("-inf")

    def renew(self) -> None:
        """Mark (again) this call as waiting; at most once a third of the mark's life (cheap in a loop)."""
        now = time.time()
        if now - self._renewed_at < self.ttl_s / 3:
            return
        pipe = self.connection.pipeline(transaction=False)
        pipe.zadd(self.name, {self.member: now + self.ttl_s})
        pipe.zremrangebyscore(self.name, "-inf", now)  # lapsed marks of waiters that died
        pipe.expire(self.name, int(self.ttl_s) + 1)
        try:
            pipe.execute()
        except redis.RedisError as exc:  # best effort (a user without the right): the wait itself goes on
            logger.debug("could not mark a wait on %s: %s", self.name, exc)
            return
        self._renewed_at = now

    def __enter__(self) -> Waiting:
        self.renew()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self.connection.zrem(self.name, self.member)
        except redis.RedisError:
            pass  # the mark lapses on its own


def others_waiting(connection: redis.Redis, settings: Settings, cache_key: str) -> int:
    """How many calls of any declared team wait for ``cache_key`` now (live marks, one round trip)."""
    teams = sorted({*settings.declared_teams.names, settings.team})
    now = time.time()
    pipe = connection.pipeline(transaction=False)
    for team in teams:
        pipe.zcount(waiting_key(settings, cache_key, team=team), now, "+inf")
    return sum(int(count) for count in pipe.execute())
