"""The settings and Redis client a routing call uses: Celery calls a router with the message alone.

Both are looked up at each call through their modules (not bound at import),
so a process that changes its settings, or a test that replaces them, is seen.
"""

from __future__ import annotations

import redis

import dockyard.config.settings as config_settings
from dockyard.config.settings import Settings
from dockyard.tasks import keyspace
from dockyard.tasks.teams.identity import sending_settings


def routing_settings() -> Settings:
    """The process's settings, now; inside a worker task, for that task's team (its queues and keys)."""
    return sending_settings(config_settings.get_settings())


def routing_redis(settings: Settings) -> redis.Redis:
    """The Redis client of dockyard's keys for ``settings``."""
    return keyspace.redis_for(settings)


def routing_farm() -> tuple[Settings, redis.Redis]:
    """The process's settings and its Redis client for dockyard's keys."""
    settings = routing_settings()
    return settings, routing_redis(settings)
