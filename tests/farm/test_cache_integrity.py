"""The cache's integrity on the real farm: a fenced owner after a Redis flush, contexts that repair themselves.

- A build's lease vanishes in a FLUSHDB while its owner still builds: a
  waiting host takes over and stores the entry; the first owner's late write
  is refused (``SingleFlight.store_as_owner``) and it answers with the winner.
- A context whose chunks left the context store is uploaded again by the next
  caller; one whose chunk is corrupt is dropped by the worker (``ContextMissing``)
  and the caller uploads it again and resends the build.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import redis
from celery.result import AsyncResult

from dockyard.tasks.celery_app import caller_app
from dockyard.config.settings import Settings
from dockyard.tasks import client
from dockyard.tasks.cache.single_flight import build_cache
from dockyard.tasks.context.store import upload_context
from dockyard.tasks.prepare import prepare_build
from dockyard.tasks.task_names import BUILD_TASK
from dockyard.tasks.request.spec import BuildSpec
from dockyard.tasks.engine.images import image_exists
from dockyard.tasks.teams.keys import team_key
from tests.farm.farm_helpers import team_host_queue
from tests.farm.conftest import WorkerProcess
from tests.farm.farm_helpers import slow_context

WAIT_S = 30.0  # the longest wait for one step; the tests' task time limit is 25 s (tests/farm/conftest.py)
CHUNK_BYTES = 4 * 1024**2  # dockyard.tasks.context.store.CONTEXT_CHUNK_BYTES: the blob below makes a context of two chunks


def wait_for(what: str, probe: Callable[[], Any], timeout_s: float = WAIT_S) -> Any:
    """``probe()``'s first truthy value, polled; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def engine_of(host: str, farm_workers: list[WorkerProcess], engines: list[docker.DockerClient]) -> docker.DockerClient:
    """The engine of the farm worker ``host``."""
    return engines[[each.host_id for each in farm_workers].index(host)]


def build_container(engine: docker.DockerClient, run_line: str) -> Any:
    """The running classic-builder container of the RUN step ``run_line`` on ``engine``, or None."""
    for container in engine.containers.list(filters={"status": "running"}):
        if run_line in " ".join(container.attrs["Config"].get("Cmd") or []):
            return container
    return None


def flush_test_database(connection: redis.Redis) -> None:
    """FLUSHDB the tests' database in one transaction that puts kombu's routing table back.

    Gone: every dockyard key (leases, entries, contexts, heartbeats, image
    locations) and Celery's queues, unacked messages and results. Kept:
    ``_kombu.binding.*``, the static exchange-to-queue table. A real Redis
    restart makes every client reconnect and declare its queues again; a
    FLUSHDB under live connections does not, and this session's workers and
    callers (and the forward of the first owner's task) still route through it.
    """
    routes = {name: connection.dump(name) for name in connection.scan_iter(match="_kombu.binding.*", count=1000)}
    pipe = connection.pipeline(transaction=True)
    pipe.flushdb()
    for name, payload in routes.items():
        if payload is not None:
            pipe.restore(name, 0, payload)
    pipe.execute()


def send_build(spec: BuildSpec, host: str) -> AsyncResult:
    """The build of ``spec`` sent to ``host``'s own queue (so the test chooses who owns and who waits)."""
    return caller_app().signature(BUILD_TASK, kwargs={"spec": spec.model_dump()}).apply_async(queue=team_host_queue(host))


def test_after_a_flush_the_taker_over_stores_and_the_first_owners_late_write_is_fenced(
    tmp_path: Path, repo: str, base_image: str, settings: Settings, redis_client: redis.Redis,
    engines: list[docker.DockerClient], farm_workers: list[WorkerProcess],
) -> None:
    """Owner A's build is frozen while Redis is flushed; B takes over, stores; A's late write must not land.

    No setting is shortened here: the lease is lost to the flush, not to an expiry, so the
    suite's lease_s and heartbeat (tests/farm/conftest.py) only bound how fast B notices.
    """
    context = slow_context(tmp_path / "ctx", base_image, seconds=3)
    run_line = (context / "Dockerfile").read_text().split("RUN ", 1)[1].strip()
    # the shared-filesystem transport: the context lives on disk, not in Redis, so the flush leaves it
    # readable and the taker-over can build (a context in the store would go with the flush)
    spec, packed = prepare_build(
        {"image_name": repo, "path": str(context), "tag": "fenced"},
        settings.model_copy(update={"context_transport": "path"}),
    )
    packed.close()
    cache = build_cache(redis_client, settings)
    cache_key = client.caller_cache_key(spec, settings)  # the content key plus the base's digest (it pulls)
    assert cache_key is not None
    lease_key = cache.lease(cache_key).name
    owner, taker = farm_workers
    owner_engine = engine_of(owner.host_id, farm_workers, engines)
    lost_lease = f"lost the lease of {cache_key}"
    assert lost_lease not in owner.log()

    first = send_build(spec, owner.host_id)
    container = wait_for("the first owner's RUN step", lambda: build_container(owner_engine, run_line))
    # frozen, not slowed: the owner's lease stays renewed (its KeepAlive thread runs), and its late write
    # comes after the taker-over's stored entry however long either step takes
    container.pause()
    try:
        owner_token = redis_client.get(lease_key)
        assert owner_token, "the first owner holds the key's lease while it builds"
        second = send_build(spec, taker.host_id)
        wait_for("the second host's task to start (and wait on the lease)", lambda: second.state == "STARTED")
        assert redis_client.get(lease_key) == owner_token and not cache.peek(cache_key), "the second host waits"

        flush_test_database(redis_client)
        assert redis_client.get(lease_key) != owner_token, "the flush took the first owner's lease"

        taker_token = wait_for("the second host to take the lease over", lambda: redis_client.get(lease_key))
        assert taker_token != owner_token
        taker_answer = client.await_build(second, spec, settings, timeout_s=WAIT_S, cache_key=cache_key)
        stored = wait_for("the taker-over's entry", lambda: cache.peek(cache_key))
        # the first owner's caller waits the way dockyard.tasks.client does: its task is frozen, the stored entry answers
        owner_answer = client.await_build(first, spec, settings, timeout_s=WAIT_S, cache_key=cache_key)
    finally:
        try:
            container.reload()
            if container.status == "paused":
                container.unpause()
        except docker.errors.NotFound:
            pass  # the builder already removed it
    first_result = first.get(timeout=WAIT_S)  # its late write tried, then its task ended
    second_result = second.get(timeout=WAIT_S)

    entries = list(cache.entries())
    assert [cache_key for cache_key, _ in entries] == [cache_key], "exactly one entry, for this key"
    entry = entries[0][1]
    assert entry.token == taker_token.decode(), (
        f"the entry was written by the first owner after it lost its lease ({entry.host}, token {entry.token})"
    )
    assert (entry.host, entry.owner) == (taker.host_id, second.id)
    assert entry == stored, "the taker-over's entry was never replaced"
    assert lost_lease in owner.log(), "the first owner's log says it lost the lease"
    assert (first_result["host"], first_result["cache"]) == (taker.host_id, "joined"), "A answers with B's image"
    assert (second_result["host"], second_result["cache"]) == (taker.host_id, "built")
    assert (taker_answer["host"], taker_answer["cache"]) == (taker.host_id, "built")
    assert owner_answer["host"] == taker.host_id
    for result in (owner_answer, taker_answer, first_result, second_result):
        assert result["image_id"] == entry.value["image_id"]
        assert image_exists(engine_of(result["host"], farm_workers, engines), result["image_id"]), result
    assert not redis_client.exists(lease_key), "no lease left behind"


@pytest.fixture
def uploads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bool]]:
    """What each of the caller's context uploads through ``dockyard.tasks.client`` returned (True: it uploaded)."""
    seen: list[bool] = []

    def recording(*args: Any, **kwargs: Any) -> bool:
        uploaded = upload_context(*args, **kwargs)
        seen.append(uploaded)
        return uploaded

    monkeypatch.setattr(client, "upload_context", recording)
    yield seen


def two_chunk_context(project: Path, repo: str, settings: Settings) -> tuple[str, list[str]]:
    """Make ``project``'s context two chunks long; the store's meta key and chunk keys of its digest."""
    (project / "blob.bin").write_bytes(os.urandom(CHUNK_BYTES + 4096))
    spec, packed = prepare_build({"image_name": repo, "path": str(project)}, settings)  # as dockyard.tasks.client packs it
    packed.close()
    digest = spec.context_digest
    return team_key(settings, "ctx", digest, "meta"), [team_key(settings, "ctx", digest, str(index)) for index in range(2)]


def test_a_context_whose_chunks_left_the_store_is_uploaded_again_by_the_next_request(
    project: Path, repo: str, settings: Settings, context_store: redis.Redis, uploads: list[bool],
    engines: list[docker.DockerClient], farm_workers: list[WorkerProcess],
) -> None:
    """Chunks deleted, metadata kept: the store reports the context incomplete, the caller uploads it again."""
    meta, chunks = two_chunk_context(project, repo, settings)
    built = client.build(repo, path=str(project), tag="chunks")
    assert uploads == [True] and context_store.hget(meta, "chunks") == b"2"
    originals = [context_store.get(name) for name in chunks]

    assert context_store.delete(*chunks) == 2
    assert context_store.exists(meta), "the metadata stays: the context looks present"
    rebuilt = client.build(repo, path=str(project), tag="chunks", ignore_cache=True)  # must read the context

    assert uploads == [True, True], "the second request found the context incomplete and uploaded it again"
    assert [context_store.get(name) for name in chunks] == originals
    assert rebuilt["cache"] == "built"
    for result in (built, rebuilt):
        assert image_exists(engine_of(result["host"], farm_workers, engines), result["image_id"]), result


def test_a_corrupt_context_is_dropped_by_the_worker_and_the_caller_uploads_it_again(
    project: Path, repo: str, settings: Settings, context_store: redis.Redis, uploads: list[bool],
    engines: list[docker.DockerClient], farm_workers: list[WorkerProcess],
) -> None:
    """A chunk corrupted in place: the worker drops the context's metadata and fails with ``ContextMissing``;
    the caller uploads the context again and resends, and the build succeeds."""
    meta, chunks = two_chunk_context(project, repo, settings)
    built = client.build(repo, path=str(project), tag="corrupt")
    original = context_store.get(chunks[1])
    assert uploads == [True] and isinstance(original, bytes)

    context_store.set(chunks[1], bytes([original[0] ^ 0xFF]) + original[1:], keepttl=True)
    lines: list[str] = []
    repaired = client.build(repo, path=str(project), tag="corrupt", ignore_cache=True, on_output=lines.append)
    assert uploads == [True, False, True], (
        "every chunk was there, so the first send uploaded nothing; after the worker's ContextMissing "
        "the caller uploaded the context again"
    )
    assert any("is corrupt in the store: it was removed" in line and "uploading it again" in line for line in lines), lines
    assert context_store.get(chunks[1]) == original
    assert repaired["cache"] == "built"
    for result in (built, repaired):
        assert image_exists(engine_of(result["host"], farm_workers, engines), result["image_id"]), result
