"""The farm's Redis asks for a password, and a team's caller may not write the farm's own records.

workers/provision.sh starts the farm's Redis with the worker user (workers and
operators), the admin user and one user per declared team (``dockyard teams
acl``). The test process is a caller of the session's team A (tests/farm/conftest.py);
the rest of the suite runs the client's whole API (builds, pushes, chains, the
fast path, live output) through that user. What one team may not do to another
is tests/farm/test_teams.py.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis

from dockyard.config.settings import Settings
from dockyard.tasks import client
from dockyard.config.teams import REDIS_USER_PREFIX
from tests.farm import conftest
from tests.farm.conftest import CALLER_REDIS_URL, CALLER_STORE_URL, WORKER_REDIS_URL, Registry, WorkerProcess

# what a caller may read (by exact key) but never write: cache entries, leases, host records
FARM_RECORDS = ("build", "lease", "hosts")
# the farm's records a caller may neither read nor write: other keys of other modules, metrics, contexts (those
# go to the context store, never the farm's Redis)
PRIVATE_RECORDS = ("cache", "byimage", "metrics", "ctx", "spec", "used", "deliveries", "drained")


def _without_credentials(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1]))


@pytest.fixture
def caller() -> Iterator[redis.Redis]:
    if not os.environ.get("DOCKYARD_ADMIN_REDIS_URL"):
        pytest.fail("farm.env names no DOCKYARD_ADMIN_REDIS_URL (the session's teams need it): run `bash workers/run.sh test`")
    assert urlsplit(CALLER_REDIS_URL).username == REDIS_USER_PREFIX + conftest.TEAM_A != urlsplit(WORKER_REDIS_URL).username
    connection = redis.Redis.from_url(CALLER_REDIS_URL)
    yield connection
    connection.close()


def test_a_client_without_a_password_is_refused() -> None:
    anonymous = redis.Redis.from_url(_without_credentials(WORKER_REDIS_URL))
    with pytest.raises(redis.AuthenticationError):
        anonymous.get("dockyard-test:build:x")
    wrong = redis.Redis.from_url(_without_credentials(WORKER_REDIS_URL), username=REDIS_USER_PREFIX + conftest.TEAM_A, password="wrong")
    with pytest.raises(redis.AuthenticationError):
        wrong.ping()


@pytest.mark.parametrize("record", FARM_RECORDS)
def test_a_caller_reads_but_cannot_write_the_farms_records(
    record: str, caller: redis.Redis, redis_client: redis.Redis, settings: Settings
) -> None:
    name = f"{settings.key_prefix}{record}:acl-{uuid.uuid4().hex[:8]}"
    redis_client.set(name, "by the worker", ex=60)  # the worker user writes it
    try:
        assert caller.get(name) == b"by the worker"
        with pytest.raises(redis.exceptions.NoPermissionError):
            caller.set(name, "forged by a caller")
        with pytest.raises(redis.exceptions.NoPermissionError):
            caller.delete(name)
        with pytest.raises(redis.exceptions.NoPermissionError):
            caller.set(f"{settings.key_prefix}{record}:new-{uuid.uuid4().hex[:8]}", "forged")
        assert redis_client.get(name) == b"by the worker"
    finally:
        redis_client.delete(name)


@pytest.mark.parametrize("record", PRIVATE_RECORDS)
def test_a_caller_cannot_read_the_farms_private_records(
    record: str, caller: redis.Redis, redis_client: redis.Redis, settings: Settings
) -> None:
    name = f"{settings.key_prefix}{record}:acl-{uuid.uuid4().hex[:8]}"
    redis_client.set(name, "by the worker", ex=60)
    try:
        with pytest.raises(redis.exceptions.NoPermissionError):
            caller.get(name)
        with pytest.raises(redis.exceptions.NoPermissionError):
            caller.set(name, "forged by a caller")
    finally:
        redis_client.delete(name)


def test_a_caller_cannot_touch_unacked_messages_or_send_remote_control(caller: redis.Redis) -> None:
    with pytest.raises(redis.exceptions.NoPermissionError):
        caller.hgetall("unacked")
    with pytest.raises(redis.exceptions.NoPermissionError):
        caller.publish("/13.celery.pidbox", "{}")
    with pytest.raises(redis.exceptions.NoPermissionError):
        caller.flushdb()


def test_a_caller_writes_contexts_only_in_the_context_store(context_store: redis.Redis, settings: Settings) -> None:
    """The context store (workers/provision.sh): a team's caller may write ``<prefix>team:<team>:ctx:*``
    there, nothing else."""
    store = redis.Redis.from_url(CALLER_STORE_URL)
    assert urlsplit(CALLER_STORE_URL).username == REDIS_USER_PREFIX + conftest.TEAM_A
    chunk = f"{settings.key_prefix}team:{settings.team}:ctx:sha256:acl-{uuid.uuid4().hex}:0"
    assert store.set(chunk, b"tar bytes", ex=60) and store.get(chunk) == b"tar bytes"
    for refused in (lambda: store.set(f"{settings.key_prefix}build:acl", b"x"), store.flushdb,
                    lambda: store.set(f"{settings.key_prefix}ctx:sha256:acl:0", b"x"),
                    lambda: store.config_get("maxmemory"), lambda: store.eval("return 1", 0)):
        with pytest.raises(redis.exceptions.NoPermissionError):
            refused()
    assert store.delete(chunk) == 1


def test_a_caller_cannot_put_contexts_in_the_farms_redis(caller: redis.Redis, settings: Settings) -> None:
    """Contexts go to the context store: a caller cannot fill the broker's memory with them."""
    with pytest.raises(redis.exceptions.NoPermissionError):
        caller.set(f"{settings.key_prefix}team:{settings.team}:ctx:sha256:acl-{uuid.uuid4().hex}:0", b"tar bytes", ex=60)


def test_the_clients_api_works_as_a_caller(
    project: Path, repo: str, registry: Registry, settings: Settings, farm_workers: list[WorkerProcess]
) -> None:
    assert urlsplit(settings.effective_cache_url).username == REDIS_USER_PREFIX + conftest.TEAM_A
    assert urlsplit(settings.effective_broker_url).username == REDIS_USER_PREFIX + conftest.TEAM_A
    lines: list[str] = []
    built = client.build(repo, tag="acl", on_output=lines.append)
    assert built["image_id"].startswith("sha256:") and lines
    again = client.build(repo, tag="acl")
    assert again["cache"] == "hit" and again["image_id"] == built["image_id"]
    pushed = client.push(repo, tag="acl", credentials=registry.credentials)
    assert registry.manifest_digest(repo.removeprefix(registry.url + "/"), "acl") == pushed["digest"]
    (project / "app.txt").write_text(f"{uuid.uuid4()}\n")
    chained = client.build_and_push(repo, tag="acl-chain", credentials=registry.credentials).apply_async()
    result = chained.get(timeout=settings.task_time_limit_s * 2)
    assert registry.manifest_digest(repo.removeprefix(registry.url + "/"), "acl-chain") == result["digest"]


def test_cacheable_works_in_a_caller_process(caller: redis.Redis, redis_client: redis.Redis, settings: Settings) -> None:
    """prefect-docker's ``cacheable``, distributed: a caller may run it, under its team's own ``call:`` keys."""
    from dockyard.tasks.cache.single_flight import cacheable

    calls: list[str] = []

    @cacheable
    def shout(word: str) -> str:
        calls.append(word)
        return word.upper()

    word = uuid.uuid4().hex
    assert shout(word) == shout(word) == word.upper()
    assert calls == [word], "computed once, then answered from Redis"
    own = f"{settings.key_prefix}team:{settings.team}:call:"
    stored = list(redis_client.scan_iter(own + "*"))  # a caller may not list keys: the worker user looks
    assert stored, "stored under the team's call:"
    woken = list(redis_client.scan_iter(f"{settings.key_prefix}team:{settings.team}:done:call:*"))
    assert woken, "its waiters are woken on the team's own done:call: stream (a refused XADD would be swallowed)"
    caller.delete(*stored, *woken)
