"""Leases in Redis: one owner per key, an expiry, renewed while work runs, released by its owner.

Behind Sentinel, replication is asynchronous: a lease the master granted in
its last moments could be gone on the replica that replaces it, and a second
owner would build the same key. A lease made with ``replicas`` waits (``WAIT``)
until that many replicas hold it before its owner starts.
"""

from __future__ import annotations

import secrets
import threading
from types import TracebackType

import redis

_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


REPLICA_WAIT_MS = 1000  # how long a write waits for its replicas; past it, the owner goes on (best effort)


def replicate(connection: redis.Redis, replicas: int) -> int:
    """Wait up to ``REPLICA_WAIT_MS`` until ``replicas`` replicas have every write made so far on this
    connection's server; the number that had (0 without replicas to wait for)."""
    if replicas <= 0:
        return 0
    return int(connection.wait(replicas, REPLICA_WAIT_MS))


class Lease:
    """A lease on ``name``: ``acquire`` once, then ``renew`` and ``release`` only as its owner."""

    def __init__(self, connection: redis.Redis, name: str, *, lease_s: float, replicas: int = 0) -> None:
        self.connection = connection
        self.name = name
        self.replicas = replicas
        self.lease_ms = max(1, int(lease_s * 1000))
        self.token = secrets.token_hex(16)

    def acquire(self) -> bool:
        """Take the lease if nobody holds it (then wait for ``replicas`` to hold it too)."""
        taken = bool(self.connection.set(self.name, self.token, nx=True, px=self.lease_ms))
        if taken:
            replicate(self.connection, self.replicas)
        return taken

    def renew(self) -> bool:
        """Extend the lease; False if it expired or another owner took it."""
        return bool(self.connection.eval(_RENEW, 1, self.name, self.token, self.lease_ms))

    def release(self) -> bool:
        """Give the lease up; never deletes another owner's lease."""
        return bool(self.connection.eval(_RELEASE, 1, self.name, self.token))

    def held_by_anyone(self) -> bool:
        return bool(self.connection.exists(self.name))


class KeepAlive:
    """Renews a lease every third of its duration in a thread, for the life of a ``with`` block."""

    def __init__(self, lease: Lease) -> None:
        self.lease = lease
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{lease.name}", daemon=True)

    def _run(self) -> None:
        interval = self.lease.lease_ms / 3000
        while not self._stop.wait(interval):
            try:
                if not self.lease.renew():
                    self.lost.set()
                    return
            except redis.RedisError:
                continue  # a blip: the next renewal may still land before expiry

    def __enter__(self) -> KeepAlive:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()
