"""Registry credentials never rest in clear: not in Redis (queued messages included), not in worker logs."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from dockyard.config.settings import Settings
from dockyard.tasks import client
from dockyard.tasks.errors import InvalidInput
from dockyard.tasks.task_names import PUSH_TASK
from dockyard.tasks.request.sealing import seal
from dockyard.tasks.request.sealing import credentials_binding
from dockyard.config.settings import team_queue
from tests.farm import conftest
from tests.farm.conftest import Registry, WorkerProcess, with_db

TIMEOUT_S = 120


def _decoded(raw: bytes) -> Iterator[bytes]:
    """``raw`` and, for kombu messages, their base64 bodies decoded."""
    yield raw
    try:
        message = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return
    if isinstance(message, list) and message:  # kombu's unacked entries: [message, exchange, routing key]
        message = message[0]
    encoding = message.get("properties", {}).get("body_encoding") if isinstance(message, dict) else None
    if encoding == "base64":
        yield base64.b64decode(message["body"])


def everything_in(connection: redis.Redis) -> Iterator[bytes]:
    """Every key and value of the database, whatever its type."""
    for name in connection.scan_iter(count=1000):
        yield name
        kind = connection.type(name)
        if kind == b"string":
            values = [connection.get(name) or b""]
        elif kind == b"list":
            values = connection.lrange(name, 0, -1)
        elif kind == b"hash":
            values = [item for pair in connection.hgetall(name).items() for item in pair]
        elif kind == b"set":
            values = list(connection.smembers(name))
        elif kind == b"zset":
            values = connection.zrange(name, 0, -1)
        elif kind == b"stream":
            values = [v for _id, fields in connection.xrange(name) for pair in fields.items() for v in pair]
        else:
            values = []
        for value in values:
            yield from _decoded(value)


def every_database(connection: redis.Redis) -> Iterator[redis.Redis]:
    """A client for each database of the farm's Redis server (the farm's, the tests', the benchmarks', ...)."""
    del connection  # the fixture's client: same server and user as WORKER_REDIS_URL
    for number in range(16):
        other = redis.Redis.from_url(with_db(conftest.WORKER_REDIS_URL, str(number)))
        try:
            yield other
        finally:
            other.close()


def occurrences(secret: str, connection: redis.Redis) -> int:
    """How often ``secret`` appears in any key or value of any database, queued messages decoded."""
    needle = secret.encode()
    return sum(value.count(needle) for each in every_database(connection) for value in everything_in(each))


def test_a_queued_push_holds_no_clear_password(repo: str, registry: Registry, redis_client: redis.Redis) -> None:
    nobody = team_queue(f"dockyard.host.nobody-{uuid.uuid4().hex[:6]}", conftest.TEAM_A)
    client.push_signature(repo, tag="queued", credentials=registry.credentials).set(queue=nobody).apply_async()
    try:
        queued = redis_client.lrange(nobody, 0, -1)
        assert len(queued) == 1, "the message waits in Redis, no worker takes it"
        body = b"".join(_decoded(queued[0]))
        assert b"sealed" in body
        assert not any(registry.password.encode() in value for value in everything_in(redis_client))
    finally:
        redis_client.delete(nobody)


def test_after_a_push_neither_redis_nor_worker_logs_hold_the_password(
    project: Path, repo: str, registry: Registry, redis_client: redis.Redis, farm_workers: list[WorkerProcess]
) -> None:
    job = client.build_and_push(repo, credentials=registry.credentials, path=str(project), tag="secret").apply_async()
    pushed = job.get(timeout=TIMEOUT_S)
    assert pushed["digest"] == registry.manifest_digest(repo.removeprefix(registry.url + "/"), "secret")
    assert occurrences(registry.password, redis_client) == 0
    holder = next(worker for worker in farm_workers if worker.host_id == pushed["host"])
    assert "dockyard.push_docker_image" in holder.log(), "the push is in the captured log"
    for worker in farm_workers:
        assert registry.password not in worker.log()


def test_pushes_sent_by_name_leave_the_password_nowhere(
    project: Path, repo: str, registry: Registry, settings: Settings, redis_client: redis.Redis,
    farm_workers: list[WorkerProcess],
) -> None:
    """Sealed credentials by name push; clear ones by name are refused; neither leaves the password behind."""
    from dockyard.workers.app import app

    built = client.build(repo, path=str(project), tag="by-name")
    sealed = seal(registry.credentials, settings.seal_public_key, ttl_s=60, bound_to=credentials_binding(settings.team, None))
    pushed = app.send_task(PUSH_TASK, kwargs={"image_name": repo, "tag": "by-name", "credentials": sealed})
    assert pushed.get(timeout=TIMEOUT_S)["digest"] == registry.manifest_digest(
        repo.removeprefix(registry.url + "/"), "by-name"
    )
    clear = app.send_task(PUSH_TASK, args=[built], kwargs={"credentials": registry.credentials, "ignore_cache": True})
    with pytest.raises(InvalidInput, match="Clear credentials"):
        clear.get(timeout=TIMEOUT_S)
    assert occurrences(registry.password, redis_client) == 0
    for worker in farm_workers:
        assert registry.password not in worker.log()
