"""The Redis connection of dockyard's own keys (cache, leases, hosts, deliveries)."""

from __future__ import annotations

import functools

import redis

from config.settings import Settings


@functools.lru_cache(maxsize=8)
def _connect(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, health_check_interval=30)


def redis_for(settings: Settings) -> redis.Redis:
    """A shared client for ``settings.effective_cache_url`` (one pool per URL and process)."""
    return _connect(settings.effective_cache_url)


def key(settings: Settings, *parts: str) -> str:
    """A Redis key under dockyard's prefix."""
    return settings.key_prefix + ":".join(parts)
