"""Has the broker's master changed since a task was sent? (a Sentinel failover)

Replication to a replica is asynchronous: a message the old master took in
its last moments can die with it, and its caller would wait for a task no
worker ever receives. A caller that sees the sentinels name another master
while its task has not answered sends the task again: if the first copy
survived, the second is a join or a cheap hit of the same key, never a
second build.
"""

from __future__ import annotations

import time
from typing import Any

import redis

from dockyard.config.redis_urls import is_sentinel_url
from dockyard.config.settings import Settings
from dockyard.tasks.routing import placement

CHECK_EVERY_S = 1.0  # one sentinel query a second per waiting caller, only for sentinel:// brokers


class BrokerWatch:
    """The master the sentinels name for the broker, compared once a second with the last one seen."""

    def __init__(self, settings: Settings, *, every_s: float = CHECK_EVERY_S) -> None:
        self.every_s = every_s
        client = placement.broker_redis(settings) if is_sentinel_url(settings.effective_broker_url) else None
        self.pool: Any = getattr(client, "connection_pool", None) if client is not None else None
        self.master = self._master() if self.pool is not None else None
        self.next_check = time.monotonic() + every_s

    def _master(self) -> tuple[str, int] | None:
        try:
            host, port = self.pool.get_master_address()
        except redis.ConnectionError:  # MasterNotFoundError included: no master named at this moment
            return None
        return str(host), int(port)

    def moved(self) -> bool:
        """True once each time a master other than the last one seen answers (checked every ``every_s``)."""
        if self.pool is None or time.monotonic() < self.next_check:
            return False
        self.next_check = time.monotonic() + self.every_s
        now = self._master()
        if now is None or now == self.master:
            return False
        self.master = now
        return True
