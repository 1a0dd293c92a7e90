"""The Redis connection of dockyard's own keys (cache, leases, hosts, deliveries).

A ``sentinel://`` cache URL is served by redis-py's Sentinel: the client asks
the sentinels for the master named ``sentinel_master`` on every new
connection, so after a failover it reconnects to the new master.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import redis
from redis.sentinel import Sentinel

from config import defaults
from config.redis_urls import is_sentinel_url, parse_sentinel_url
from config.settings import Settings, sentinel_kwargs

HEALTH_CHECK_INTERVAL_S = 30


def connect(
    url: str, *, master: str = defaults.SENTINEL_MASTER, sentinels: Mapping[str, Any] | None = None, **options: Any
) -> redis.Redis:
    """A new client for ``url``; a ``sentinel://`` one follows the master named ``master`` (``sentinels``:
    how to reach the sentinels, see ``config.settings.sentinel_kwargs``)."""
    if not is_sentinel_url(url):
        return redis.Redis.from_url(url, **options)
    target = parse_sentinel_url(url)
    sentinel = Sentinel(list(target.sentinels), sentinel_kwargs=dict(sentinels or sentinel_kwargs(None)))  # type: ignore[no-untyped-call]
    client: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
        master, db=target.db, username=target.username, password=target.password, **options
    )
    return client


def connect_for(settings: Settings, url: str, **options: Any) -> redis.Redis:
    """A new client for ``url`` with the sentinel settings of ``settings``."""
    return connect(url, master=settings.sentinel_master, sentinels=settings.sentinel_kwargs, **options)


@functools.lru_cache(maxsize=8)
def _connect(url: str, master: str, sentinel_password: str | None) -> redis.Redis:
    return connect(
        url, master=master, sentinels=sentinel_kwargs(sentinel_password), health_check_interval=HEALTH_CHECK_INTERVAL_S
    )


def redis_for(settings: Settings) -> redis.Redis:
    """A shared client for ``settings.effective_cache_url`` (one pool per URL, master and process)."""
    password = settings.sentinel_password.get_secret_value() if settings.sentinel_password else None
    return _connect(settings.effective_cache_url, settings.sentinel_master, password)


def key(settings: Settings, *parts: str) -> str:
    """A Redis key under dockyard's prefix."""
    return settings.key_prefix + ":".join(parts)
