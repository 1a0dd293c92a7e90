"""The context store on the real farm: contexts live in a Redis of their own, and one that leaves it
between upload and build is uploaded again by the caller (or fails clearly), never a wrong image.

The test process is a caller; ``context_store`` is the store's test database as the worker user.
"""

from __future__ import annotations

import io
import os
import tarfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import redis

from dockyard.config.settings import Settings
from dockyard.tasks import client
from dockyard.tasks.context.store import upload_context
from dockyard.tasks.errors import ContextMissing
from dockyard.tasks.teams.keys import team_key
from tests.farm.conftest import WorkerProcess

CHUNK_BYTES = 4 * 1024**2  # dockyard.tasks.context.store.CONTEXT_CHUNK_BYTES
WAIT_S = 60.0


def marked_project(root: Path, base_image: str, *, chunks: int = 1) -> tuple[Path, str]:
    """A context whose image carries a fresh marker in ``/marker``, about ``chunks`` store chunks long."""
    root.mkdir(parents=True, exist_ok=True)
    marker = uuid.uuid4().hex
    (root / "marker").write_text(marker)
    (root / "Dockerfile").write_text(f"FROM {base_image}\nCOPY marker /marker\n")
    if chunks > 1:
        (root / "blob.bin").write_bytes(os.urandom((chunks - 1) * CHUNK_BYTES + 4096))
    return root, marker


def marker_in(engine: docker.DockerClient, image_id: str) -> str:
    """The content of ``/marker`` in ``image_id``, read from a created (never started) container."""
    container = engine.containers.create(image_id, command=["true"], network_mode="none")
    try:
        stream, _stat = container.get_archive("/marker")
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as archive:
            handle = archive.extractfile("marker")
            assert handle is not None
            return handle.read().decode()
    finally:
        container.remove(force=True)


def engine_of(host: str, farm_workers: list[WorkerProcess], engines: list[docker.DockerClient]) -> docker.DockerClient:
    return engines[[each.host_id for each in farm_workers].index(host)]


def context_keys(store: redis.Redis, settings: Settings, digest: str) -> list[bytes]:
    return sorted(store.scan_iter(match=team_key(settings, "ctx", digest, "*"), count=1000))


def context_keys_in_broker(redis_client: redis.Redis) -> list[bytes]:
    return sorted(redis_client.scan_iter(match="*ctx:*", count=1000))


@pytest.fixture
def uploads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, bool]]]:
    """Each upload the caller makes: (digest, uploaded?)."""
    seen: list[tuple[str, bool]] = []

    def recording(*args: Any, **kwargs: Any) -> bool:
        uploaded = upload_context(*args, **kwargs)
        seen.append((args[2].digest, uploaded))
        return uploaded

    monkeypatch.setattr(client, "upload_context", recording)
    yield seen


def remove_after_first_upload(
    monkeypatch: pytest.MonkeyPatch, uploads: list[tuple[str, bool]], remove: Callable[[str], int]
) -> list[int]:
    """Right after the caller's first upload, ``remove(digest)`` (before the task is sent); the keys removed."""
    removed: list[int] = []
    recording = client.upload_context

    def then_remove(*args: Any, **kwargs: Any) -> bool:
        uploaded = recording(*args, **kwargs)
        if not removed:
            removed.append(remove(args[2].digest))
        return uploaded

    monkeypatch.setattr(client, "upload_context", then_remove)
    return removed


@pytest.mark.parametrize("what", ["every key", "one chunk"])
def test_a_context_removed_right_after_upload_is_uploaded_again_and_the_right_image_is_built(
    what: str, tmp_path: Path, base_image: str, repo: str, settings: Settings, redis_client: redis.Redis,
    context_store: redis.Redis, uploads: list[tuple[str, bool]], monkeypatch: pytest.MonkeyPatch,
    engines: list[docker.DockerClient], farm_workers: list[WorkerProcess],
) -> None:
    """The worker finds the context gone (``ContextMissing``); the caller uploads it again and resends."""
    project, marker = marked_project(tmp_path / "ctx", base_image, chunks=2)

    def remove(digest: str) -> int:
        if what == "every key":
            return int(context_store.delete(*context_keys(context_store, settings, digest)))
        return int(context_store.delete(team_key(settings, "ctx", digest, "1")))  # one chunk, as LRU may evict it

    removed = remove_after_first_upload(monkeypatch, uploads, remove)
    lines: list[str] = []
    built = client.build(repo, path=str(project), tag="evicted", on_output=lines.append, timeout_s=WAIT_S)

    assert removed == ([3] if what == "every key" else [1]), "meta and two chunks, or one chunk, were removed"
    digest = uploads[0][0]
    assert uploads == [(digest, True), (digest, True)], "uploaded, removed, then uploaded again by the caller"
    assert any("uploading it again and resending the build (1/2)" in line for line in lines), lines
    assert built["cache"] == "built"
    assert marker_in(engine_of(built["host"], farm_workers, engines), built["image_id"]) == marker, "the right image"
    assert len(context_keys(context_store, settings, digest)) == 3, "the context is whole in the store again"
    assert context_keys_in_broker(redis_client) == [], "no context key in the broker's Redis"


def test_a_signature_whose_context_was_removed_fails_with_a_clear_context_missing_and_caches_nothing(
    tmp_path: Path, base_image: str, repo: str, settings: Settings, redis_client: redis.Redis,
    context_store: redis.Redis, uploads: list[tuple[str, bool]], engines: list[docker.DockerClient],
    farm_workers: list[WorkerProcess],
) -> None:
    """A build sent as a signature has no caller to upload again: it fails with ``ContextMissing``
    naming what to do, and nothing is cached (the next request builds, with the right content)."""
    project, marker = marked_project(tmp_path / "ctx", base_image)
    signature = client.build_signature(repo, path=str(project), tag="gone")
    digest = uploads[0][0]
    assert context_store.delete(*context_keys(context_store, settings, digest)) == 2, "meta and one chunk"

    with pytest.raises(ContextMissing, match=r"is not in the store \(evicted, expired or never uploaded\); send the build again"):
        signature.apply_async().get(timeout=WAIT_S)

    built = client.build(repo, path=str(project), tag="gone", timeout_s=WAIT_S)
    assert built["cache"] == "built", "the failure was not cached"
    assert marker_in(engine_of(built["host"], farm_workers, engines), built["image_id"]) == marker
    assert uploads == [(digest, True), (digest, True)]
    assert context_keys_in_broker(redis_client) == [], "no context key in the broker's Redis"


def test_contexts_are_in_the_context_store_and_never_in_the_brokers_redis(
    tmp_path: Path, base_image: str, repo: str, settings: Settings, redis_client: redis.Redis,
    context_store: redis.Redis, uploads: list[tuple[str, bool]], farm_workers: list[WorkerProcess],
) -> None:
    """Builds of several contexts (one of three chunks): every context whole in the store, none in the broker."""
    digests = []
    for n, chunks in enumerate((1, 1, 3)):
        project, _marker = marked_project(tmp_path / f"ctx-{n}", base_image, chunks=chunks)
        assert client.build(repo, path=str(project), tag=f"v{n}", timeout_s=WAIT_S)["cache"] == "built"
        digests.append(uploads[-1][0])
    assert [len(context_keys(context_store, settings, digest)) for digest in digests] == [2, 2, 4]
    assert all(0 < int(context_store.ttl(name)) <= settings.context_ttl_s
               for digest in digests for name in context_keys(context_store, settings, digest))
    assert context_keys_in_broker(redis_client) == [], "no context key in the broker's Redis"
