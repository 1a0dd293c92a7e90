"""The distributed cache with single flight, and the public ``cacheable`` decorator.

Keys of the build cache (under the prefix, written by workers only; the push
cache's are the same under its team's namespace, ``team:<team>:push:``):

- ``build:<key>``: the entry, JSON ``{"value", "host", "created_at", "token", "owner"}``,
  expiring after ``cache_ttl_s``;
- ``lease:<key>``: the owner's lease token (see ``dockyard.tasks.cache.lease``);
- ``failed:<key>``: the owner's failure notice for its joiners, for ``FAILURE_NOTICE_S``.

``cacheable`` runs in any process, callers included, so its keys are apart, in
its team's namespace: ``team:<team>:call:<key>``, ``...:call:lease:<key>`` and
``...:call:failed:<key>``.

The first caller of a key takes the lease, renews it while it works and
stores only a success; callers with the same key join and wait for that
value, blocked on the key's wake-ups (``dockyard.tasks.cache.notify``), not polling. If the owner dies, its lease expires and one waiter takes over.
Callers outside a worker use ``peek`` and ``join``; nobody else reads these keys.
While a call waits for a build key's owner, it marks itself as waiting
(``dockyard.tasks.cache.waiters``), so a cancelled owner goes on for it. A
``Cancelled`` owner announces no failure: its joiners see the lease go and
one of them builds.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import redis

from dockyard.config.redis_urls import is_sentinel_url
from dockyard.config.settings import Settings, get_settings
from dockyard.tasks.request.cache_key import call_key
from dockyard.tasks.errors import BuildError, Cancelled, ContextMissing, DockyardError, JoinTimeout, TransientError
from dockyard.tasks.request.results import CacheSource
from dockyard.tasks.teams.keys import TEAM_CACHES, team_key
from dockyard.tasks.keyspace import key, optional_text, redis_for
from dockyard.tasks.cache.lease import KeepAlive, Lease, replicate
from dockyard.tasks.cache.notify import Waiter, announce
from dockyard.tasks.cache.live_output import StreamReader
from dockyard.tasks.cache.waiters import Waiting

FAILURE_NOTICE_S = 30  # how long joiners can read a build owner's failure
ANSWER_SETTLE_S = 2.0  # after an owner lets go, how long a joiner waits for the holder to record the tags and answer

logger = logging.getLogger("dockyard.cache")
P = ParamSpec("P")
# fencing: write the entry only while the writer still holds the key's lease
_STORE_IF_OWNER = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  redis.call('set', KEYS[2], ARGV[2], 'EX', ARGV[3])
  return 1
end
return 0
"""
# an entry judged invalid goes only if it is still the one judged (another owner's fresh entry stays)
_DELETE_IF_SAME = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""
INVALID_REREADS = 3  # an entry rejected, then found replaced meanwhile, is judged again this many times
T = TypeVar("T")
Source = CacheSource  # how single flight had the value


@dataclass(frozen=True)
class Entry:
    """A stored value: which host holds it, when it was made, and by which lease and task."""

    value: Any
    host: str
    created_at: float
    token: str = ""
    owner: str | None = None

    @classmethod
    def from_json(cls, raw: bytes | str) -> Entry:
        data = json.loads(raw)
        return cls(data["value"], data["host"], data["created_at"], data.get("token", ""), data.get("owner"))

    def to_json(self) -> str:
        return json.dumps({
            "value": self.value, "host": self.host, "created_at": self.created_at,
            "token": self.token, "owner": self.owner,
        })


@dataclass(frozen=True)
class Outcome:
    """A value from the cache, and how it was had."""

    value: Any
    source: Source
    entry: Entry
    took_over: bool = False  # computed after another owner's lease expired without a result


class SingleFlight:
    """Get a key's value from the cache, or compute it once for every concurrent caller."""

    def __init__(self, connection: redis.Redis, settings: Settings, *, namespace: str = "call") -> None:
        self.connection = connection
        self.settings = settings
        self.namespace = namespace
        self.replicas = 1 if is_sentinel_url(settings.effective_cache_url) else 0  # see dockyard.tasks.cache.lease

    def _key(self, *parts: str) -> str:
        """A key of this cache: a team's own (``call``, ``push``) or the farm's (``build``)."""
        if self.namespace in TEAM_CACHES:
            return team_key(self.settings, self.namespace, *parts)
        return key(self.settings, self.namespace, *parts)

    def entry_key(self, cache_key: str) -> str:
        return self._key(cache_key)

    def _aux_key(self, kind: str, cache_key: str) -> str:
        """The lease or failure key: the build cache's are ``lease:``/``failed:``; a team cache keeps its own."""
        if self.namespace not in TEAM_CACHES:
            return key(self.settings, kind, cache_key)
        return self._key(kind, cache_key)

    def waiting(self, cache_key: str) -> contextlib.AbstractContextManager[Waiting | None]:
        """This call's waiting mark on a build key (``dockyard.tasks.cache.waiters``); none in a team cache."""
        if self.namespace in TEAM_CACHES:
            return contextlib.nullcontext()
        return Waiting(self.connection, self.settings, cache_key)

    def lease(self, cache_key: str) -> Lease:
        return Lease(self.connection, self._aux_key("lease", cache_key), lease_s=self.settings.lease_s, replicas=self.replicas)

    def peek(self, cache_key: str) -> Entry | None:
        """The stored entry of ``cache_key``, without waiting or computing."""
        raw = self.connection.get(self.entry_key(cache_key))
        return Entry.from_json(raw) if raw else None

    def join(
        self,
        cache_key: str,
        accept: Callable[[Entry], bool] = lambda entry: True,
        *,
        output: tuple[StreamReader, Callable[[str], None]] | None = None,
    ) -> Entry | None:
        """Wait while ``cache_key`` is being computed; the stored entry that ``accept`` takes, or None.

        None means nothing is running, or the run ended without an acceptable
        entry (failed, or its owner died): the caller then asks a worker.
        ``output``: a reader of the build's live output and where its lines go while waiting.
        """
        deadline = time.monotonic() + self.settings.task_time_limit_s + self.settings.lease_s
        lease = self.lease(cache_key)
        waiter = Waiter(self.connection, self.settings, self.namespace, cache_key)
        joined = False
        with self.waiting(cache_key) as mark:
            while lease.held_by_anyone() and time.monotonic() < deadline:
                joined = True
                if mark is not None:
                    mark.renew()
                entry = self.peek(cache_key)
                if entry is not None and accept(entry):
                    return entry
                block_s = min(self.settings.wait_wake_s, max(0.001, deadline - time.monotonic()))
                if output is None:
                    waiter.wait(block_s)
                    continue
                reader, sink = output
                found = waiter.wait(block_s, also={reader.name: reader.last_id})
                for line in reader.take(found.get(reader.name, [])):
                    sink(line + "\n")
        if not joined:
            entry = self.peek(cache_key)
            return entry if entry is not None and accept(entry) else None
        return self._settled(cache_key, accept, waiter)

    def _settled(self, cache_key: str, accept: Callable[[Entry], bool], waiter: Waiter) -> Entry | None:
        """The entry once its owner is done: a stored entry that ``accept`` does not take yet gets
        up to ``ANSWER_SETTLE_S`` for the holder to record its tags (it announces ``answered`` then)."""
        deadline = time.monotonic() + ANSWER_SETTLE_S
        while True:
            entry = self.peek(cache_key)
            if entry is None or accept(entry):
                return entry
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            woke = waiter.wait(remaining).get(waiter.name, [])
            if not woke:
                return None

    def entries(self) -> Iterator[tuple[str, Entry]]:
        """Every stored entry of this namespace, as (cache key, entry)."""
        prefix = self._key("")
        for name in self.connection.scan_iter(match=prefix + "*", count=1000):
            raw = self.connection.get(name)
            if raw:
                yield name.decode().removeprefix(prefix), Entry.from_json(raw)

    def store_as_owner(self, cache_key: str, value: Any, lease: Lease, *, host: str | None, owner: str | None) -> Entry | None:
        """Write the entry only if ``lease`` is still held (atomically); None if the lease was lost."""
        entry = Entry(value, host or self.settings.host_id, time.time(), lease.token, owner)
        written = self.connection.eval(
            _STORE_IF_OWNER, 2, lease.name, self.entry_key(cache_key), lease.token, entry.to_json(),
            self.settings.cache_ttl_s,
        )
        if written:
            replicate(self.connection, self.replicas)  # a failover right after keeps the entry: no second build
        return entry if written else None

    def invalidate(self, *cache_keys: str) -> int:
        """Remove these entries; the number removed."""
        if not cache_keys:
            return 0
        return int(self.connection.delete(*(self.entry_key(each) for each in cache_keys)))

    def _valid_entry(self, cache_key: str, valid: Callable[[Entry], bool]) -> Entry | None:
        """The stored entry if ``valid`` takes it; one it rejects is removed only if it is still the
        one judged (compare and delete, atomically): an entry another owner wrote meanwhile is
        judged in turn (``INVALID_REREADS`` times at most), never removed unseen."""
        for _read in range(INVALID_REREADS):
            raw = self.connection.get(self.entry_key(cache_key))
            if not raw:
                return None
            entry = Entry.from_json(raw)
            if valid(entry):
                return entry
            if self.connection.eval(_DELETE_IF_SAME, 1, self.entry_key(cache_key), raw):
                return None
        return None

    def remove(self, cache_keys: list[str]) -> list[str]:
        """Remove each of these entries; the keys that had none."""
        pipe = self.connection.pipeline(transaction=False)
        for cache_key in cache_keys:
            pipe.delete(self.entry_key(cache_key))
        return [cache_key for cache_key, count in zip(cache_keys, pipe.execute()) if not count]

    def clear(self) -> int:
        """Remove every entry of this namespace; the number removed."""
        names = list(self.connection.scan_iter(match=self._key("*"), count=1000))
        return int(self.connection.delete(*names)) if names else 0

    def run(
        self,
        cache_key: str,
        compute: Callable[[], Any],
        *,
        valid: Callable[[Entry], bool] = lambda entry: True,
        ignore_cache: bool = False,
        host: str | None = None,
        owner: str | None = None,
        on_takeover: Callable[[], None] | None = None,
        check_cancel: Callable[[], None] | None = None,
    ) -> Outcome:
        """The cached value of ``cache_key``, or ``compute()`` run under the key's lease.

        ``owner`` (a task id) is stored with a computed value, so its caller can tell it built it.
        ``on_takeover`` runs when the owner this call waited for vanished, before it takes the
        lease itself: a Celery task raises its retry there, so the build gets a fresh time limit.
        ``check_cancel`` runs at each wake-up while this call waits for another owner: it raises
        ``Cancelled`` to leave (the build goes on for its owner and the others).
        """
        if not ignore_cache and (hit := self._valid_entry(cache_key, valid)) is not None:
            return Outcome(hit.value, "hit", hit)
        deadline = time.monotonic() + self.settings.task_time_limit_s + self.settings.lease_s
        lease = self.lease(cache_key)
        took_over = False
        while True:
            if lease.acquire():
                outcome = self._compute_as_owner(cache_key, compute, lease, host, owner)
                return Outcome(outcome.value, outcome.source, outcome.entry, took_over)
            joined = self._wait_for_owner(cache_key, lease, deadline, check_cancel)
            if joined is not None:
                return joined
            took_over = True
            if on_takeover is not None:
                on_takeover()

    def _compute_as_owner(
        self, cache_key: str, compute: Callable[[], Any], lease: Lease, host: str | None, owner: str | None
    ) -> Outcome:
        try:
            with KeepAlive(lease):
                try:
                    value = compute()
                except DockyardError as exc:
                    if not isinstance(exc, (TransientError, Cancelled)):  # a cancelled build: a joiner builds it
                        self._announce_failure(cache_key, exc, lease.token)
                    raise
            entry = self.store_as_owner(cache_key, value, lease, host=host, owner=owner)
            if entry is not None:
                return Outcome(value, "built", entry)
        finally:
            lease.release()
            announce(self.connection, self.settings, self.namespace, cache_key, "released")
        return self._after_lost_lease(cache_key, value, lease, host, owner)

    def _after_lost_lease(self, cache_key: str, value: Any, lease: Lease, host: str | None, owner: str | None) -> Outcome:
        """The lease expired while computing: the entry that won answers; with none, take the lease again."""
        logger.warning("lost the lease of %s while computing it; its value is not written over another's", cache_key)
        deadline = time.monotonic() + self.settings.task_time_limit_s + self.settings.lease_s
        while True:
            winner = self.peek(cache_key)
            if winner is not None:
                return Outcome(winner.value, "joined", winner)
            if lease.acquire():
                try:
                    entry = self.store_as_owner(cache_key, value, lease, host=host, owner=owner)
                finally:
                    lease.release()
                    announce(self.connection, self.settings, self.namespace, cache_key, "released")
                if entry is not None:
                    return Outcome(value, "built", entry)
            joined = self._wait_for_owner(cache_key, lease, deadline)
            if joined is not None:
                return joined

    def _wait_for_owner(
        self, cache_key: str, lease: Lease, deadline: float, check_cancel: Callable[[], None] | None = None
    ) -> Outcome | None:
        """Wait until the owner stores a value (joined), fails (raise) or vanishes (None: take over),
        marked as waiting on the key; ``check_cancel`` at each wake-up."""
        with self.waiting(cache_key) as mark:
            return self._wait_marked(cache_key, lease, deadline, mark, check_cancel)

    def _wait_marked(
        self, cache_key: str, lease: Lease, deadline: float, mark: Waiting | None, check_cancel: Callable[[], None] | None
    ) -> Outcome | None:
        waiter = Waiter(self.connection, self.settings, self.namespace, cache_key)
        raw_owner = self.connection.get(lease.name)
        owner = optional_text(raw_owner)
        while time.monotonic() < deadline:
            if check_cancel is not None:
                check_cancel()
            if mark is not None:
                mark.renew()
            entry = self.peek(cache_key)
            if entry is not None and (owner is None or entry.token == owner):
                return Outcome(entry.value, "joined", entry)
            failure = self.connection.get(self._aux_key("failed", cache_key))
            if failure is not None:
                notice = json.loads(failure)
                if notice["token"] == owner:
                    raise joined_failure(notice)
            if not lease.held_by_anyone():
                entry = self.peek(cache_key)
                if entry is not None:
                    return Outcome(entry.value, "joined", entry)
                return None
            waiter.wait(min(self.settings.wait_wake_s, max(0.001, deadline - time.monotonic())))
        raise JoinTimeout(f"Waited too long for the build of {cache_key} on another host.")

    def _announce_failure(self, cache_key: str, exc: Exception, token: str) -> None:
        notice = {"type": type(exc).__name__, "message": str(exc), "token": token}
        self.connection.set(
            self._aux_key("failed", cache_key), json.dumps(notice), ex=FAILURE_NOTICE_S
        )


def joined_failure(notice: dict[str, Any]) -> DockyardError:
    """The error a joiner raises for its owner's failure: a ``ContextMissing`` stays one (its caller
    uploads the context again and resends), anything else is a ``BuildError`` naming it."""
    message = f"The build this call joined failed: {notice['type']}: {notice['message']}"
    return ContextMissing(message) if notice["type"] == ContextMissing.__name__ else BuildError(message)


def build_cache(connection: redis.Redis, settings: Settings) -> SingleFlight:
    """The farm's build cache: build keys to ``{"image_id"}`` on the host holding the image."""
    return SingleFlight(connection, settings, namespace="build")


def push_cache(connection: redis.Redis, settings: Settings) -> SingleFlight:
    """The farm's push cache: push keys to push results."""
    return SingleFlight(connection, settings, namespace="push")


def cacheable(func: Callable[P, T]) -> Callable[P, T]:
    """prefect-docker's ``cacheable``, distributed: results are shared through Redis.

    The key is the function's qualified name and its JSON-serialisable
    arguments (never ``credentials``, never ``ignore_cache``); concurrent
    identical calls run once; only successes are stored; ``ignore_cache=True``
    skips the lookup and stores its fresh result.
    """
    signature = inspect.signature(func)
    operation = f"{func.__module__}.{func.__qualname__}"

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        ignore_cache = bool(kwargs.pop("ignore_cache", False))
        bound = signature.bind_partial(*args, **kwargs)
        cache_key = call_key(operation, [], dict(bound.arguments))
        settings = get_settings()
        outcome = SingleFlight(redis_for(settings), settings).run(
            cache_key, lambda: func(*args, **kwargs), ignore_cache=ignore_cache
        )
        result: T = outcome.value
        return result

    return wrapper
