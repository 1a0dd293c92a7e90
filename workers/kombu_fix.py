"""A worker survives its broker failing over (a workaround for kombu 5.7's Redis transport).

When the consumer's broker connection drops, Celery closes that connection
with its errors ignored. Closing a Redis channel restores the channel's
unacknowledged messages through a new Redis client, which the channel builds
from its transport's connection. When that connection was already released,
its ``client`` is None and kombu raises ``AttributeError: 'NoneType' object has
no attribute 'hostname'`` (in ``Channel._connparams``). That is not a
connection error, so Celery does not ignore it: the worker's main process
exits with "Unrecoverable error", its running builds die, their leases expire,
and another host builds the same keys again. It was seen in about one
Sentinel failover run in fifteen (``tests/farm/test_sentinel.py``).

With ``install()``, such a channel raises ``redis.ConnectionError`` instead,
which Celery ignores as it meant to: the worker reconnects to the new master
and goes on. A message whose restore this skips stays in kombu's unacked hash.
Its task is still running here, and answers its caller through the result
backend. kombu restores the message after the visibility timeout, and it is
then a cheap hit.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import redis
from kombu.transport.redis import Channel

_MARK = "_dockyard_released_connection_check"


def install() -> None:
    """Make a channel whose connection was released raise a connection error (idempotent)."""
    original: Callable[..., Any] = Channel._connparams
    if getattr(original, _MARK, False):
        return

    @functools.wraps(original)
    def _connparams(self: Any, asynchronous: bool = False) -> Any:
        if getattr(self.connection, "client", None) is None:
            raise redis.ConnectionError("this channel's broker connection was already released")
        return original(self, asynchronous)

    setattr(_connparams, _MARK, True)
    setattr(Channel, "_connparams", _connparams)
