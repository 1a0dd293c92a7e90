"""Wake-ups for whoever waits on a cache key, instead of polling.

Key: ``done:<namespace>:<key>``, a short Redis stream. The key's owner
appends an event when it stores a value, fails or lets go of its lease, and a
worker appends one when it answers a task of that key. Waiters block on the
stream (``XREAD BLOCK``) and wake at the latest every ``wait_wake_s`` to check
what no event can tell: an owner that died, whose lease expires silently.
"""

from __future__ import annotations

from typing import Any

import redis

from dockyard.config.settings import Settings
from dockyard.tasks.keyspace import key, text
from dockyard.tasks.teams.keys import TEAM_CACHES, team_key

NOTICE_TTL_S = 600  # a key's wake-up stream expires this long after its last event


def done_key(settings: Settings, namespace: str, cache_key: str) -> str:
    """The wake-up stream of a key: the build cache's is the farm's, a team cache's its team's."""
    if namespace in TEAM_CACHES:
        return team_key(settings, "done", namespace, cache_key)
    return key(settings, "done", namespace, cache_key)


def announce(connection: redis.Redis, settings: Settings, namespace: str, cache_key: str, what: str) -> None:
    """Wake every waiter of ``cache_key`` (best effort: waiters also wake on their own)."""
    name = done_key(settings, namespace, cache_key)
    pipe = connection.pipeline(transaction=False)
    pipe.xadd(name, {"what": what}, maxlen=16, approximate=True)
    pipe.expire(name, NOTICE_TTL_S)
    try:
        pipe.execute()
    except redis.RedisError:
        pass


class Waiter:
    """Blocks until an event on ``cache_key`` after the waiter was made, or a timeout.

    Make it before checking what you wait for: an event in between is then not missed.
    """

    def __init__(self, connection: redis.Redis, settings: Settings, namespace: str, cache_key: str) -> None:
        self.connection = connection
        self.name = done_key(settings, namespace, cache_key)
        last = connection.xrevrange(self.name, count=1)
        self.last_id: Any = last[0][0] if last else "0-0"

    def wait(self, block_s: float, *, also: dict[str, Any] | None = None) -> dict[str, list[tuple[Any, Any]]]:
        """Wait up to ``block_s`` for an event (or for entries of the ``also`` streams, from their ids).

        Returns the new entries by stream name (the waiter's own name included when it woke).
        """
        streams: Any = {self.name: self.last_id, **(also or {})}
        answer: Any = self.connection.xread(streams, block=max(1, int(block_s * 1000)), count=500)
        found: dict[str, list[tuple[Any, Any]]] = {}
        for stream, entries in answer or []:
            name = text(stream)
            found[name] = list(entries)
            if name == self.name and entries:
                self.last_id = entries[-1][0]
        return found
