"""The Redis connections of dockyard's own keys (cache, leases, hosts, deliveries) and of the context store.

A ``sentinel://`` cache URL is served by redis-py's Sentinel: the client asks
the sentinels for the master named ``sentinel_master`` on every new
connection, so after a failover it reconnects to the new master; a command
that meets no master (the failover is under way) is retried, with backoff,
for ``sentinel_failover_wait_s``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelManagedConnection

from dockyard.config import defaults
from dockyard.config.redis_urls import is_sentinel_url, parse_sentinel_url
from dockyard.config.settings import Settings, sentinel_kwargs

REDIS_MAX_CONNECTIONS = 2000  # per process: every thread waiting on a key blocks on a connection of its own

HEALTH_CHECK_INTERVAL_S = 30
RETRY_BACKOFF_BASE_S = 0.05  # first wait before retrying a command through a failover, doubled up to the cap
RETRY_BACKOFF_CAP_S = 1.0


class MasterConnection(SentinelManagedConnection):
    """A connection to the master the sentinels name at each (re)connection.

    redis-py 8 reconnects a dropped connection inside a command's retries to
    the address it had, the dead master's, until the retries run out; this one
    asks the sentinels again first.
    """

    def connect_check_health(self, check_health: bool = True, retry_socket_connect: bool = True) -> None:
        if self._sock is None and self.connection_pool.is_master:
            self.host, self.port = self.connection_pool.get_master_address()
        super().connect_check_health(check_health=check_health, retry_socket_connect=retry_socket_connect)


def failover_retry(wait_s: float) -> Retry:
    """Retry a command on connection errors (no master yet, refused, reset) for about ``wait_s``."""
    retries = 0
    waited = 0.0
    while waited < wait_s:
        waited += min(RETRY_BACKOFF_CAP_S, RETRY_BACKOFF_BASE_S * 2**retries)
        retries += 1
    return Retry(ExponentialBackoff(cap=RETRY_BACKOFF_CAP_S, base=RETRY_BACKOFF_BASE_S), retries,
                 supported_errors=(redis.ConnectionError, redis.TimeoutError))


def connect(
    url: str, *, master: str = defaults.SENTINEL_MASTER, sentinels: Mapping[str, Any] | None = None,
    failover_wait_s: float = defaults.SENTINEL_FAILOVER_WAIT_S, **options: Any,
) -> redis.Redis:
    """A new client for ``url``; a ``sentinel://`` one follows the master named ``master`` (``sentinels``:
    how to reach the sentinels, see ``dockyard.config.settings.sentinel_kwargs``) and retries through a failover."""
    if not is_sentinel_url(url):
        return redis.Redis.from_url(url, **options)
    target = parse_sentinel_url(url)
    sentinel = Sentinel(list(target.sentinels), sentinel_kwargs=dict(sentinels or sentinel_kwargs(None)))  # type: ignore[no-untyped-call]
    client: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
        master, db=target.db, username=target.username, password=target.password,
        **{"retry": failover_retry(failover_wait_s), "connection_class": MasterConnection, **options},
    )
    return client


def connect_for(settings: Settings, url: str, **options: Any) -> redis.Redis:
    """A new client for ``url`` with the sentinel settings of ``settings``."""
    return connect(url, master=settings.sentinel_master, sentinels=settings.sentinel_kwargs,
                   failover_wait_s=settings.sentinel_failover_wait_s, **options)


@functools.lru_cache(maxsize=8)
def _connect(url: str, master: str, sentinel_password: str | None, failover_wait_s: float) -> redis.Redis:
    return connect(
        url, master=master, sentinels=sentinel_kwargs(sentinel_password), failover_wait_s=failover_wait_s,
        health_check_interval=HEALTH_CHECK_INTERVAL_S,
        max_connections=REDIS_MAX_CONNECTIONS,  # each waiting thread holds one while it blocks
    )


def redis_for(settings: Settings) -> redis.Redis:
    """A shared client for ``settings.effective_cache_url`` (one pool per URL, master and process)."""
    password = settings.sentinel_password.get_secret_value() if settings.sentinel_password else None
    return _connect(settings.effective_cache_url, settings.sentinel_master, password, settings.sentinel_failover_wait_s)


def context_store_for(settings: Settings) -> redis.Redis:
    """A shared client for the context store (``settings.context_store_url``), never the broker's Redis."""
    password = settings.sentinel_password.get_secret_value() if settings.sentinel_password else None
    return _connect(settings.context_store_url, settings.sentinel_master, password, settings.sentinel_failover_wait_s)


def key(settings: Settings, *parts: str) -> str:
    """A Redis key under dockyard's prefix."""
    return settings.key_prefix + ":".join(parts)


def text(value: bytes | str) -> str:
    """A Redis reply as text: bytes decoded (UTF-8), anything else as ``str``."""
    return value.decode() if isinstance(value, bytes) else str(value)


def optional_text(value: bytes | str | None) -> str | None:
    """``text`` of a reply that may be missing (None stays None)."""
    return None if value is None else text(value)
