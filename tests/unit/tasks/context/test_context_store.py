"""dockyard.tasks.context.store: the chunked, expiring, bounded context store (fakeredis).

tests/farm/test_local_context.py covers one upload then a verified download, and
refusals over the limit; these add chunking, expiry, and lost or corrupt data.
"""

from __future__ import annotations

import io
import os
import tarfile
from typing import Any

import fakeredis
import pytest

import dockyard.config.defaults
from dockyard.config.settings import Settings
from dockyard.tasks.context.pack import PackedContext
from dockyard.tasks.context import store as context_store

from dockyard.tasks.context.store import ContextMissing, download_context, upload_context
from tests.unit.support import Clock, make_settings
from tests.probes import bytes_digest, has_context

CHUNK = 1000


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(context_store, "CONTEXT_CHUNK_BYTES", CHUNK)


def packed(data: bytes) -> PackedContext:
    return PackedContext(digest=bytes_digest(data), size=len(data), file=io.BytesIO(data))


def random_tar(content_bytes: int) -> bytes:
    """A context tar holding one file of ``content_bytes`` random bytes (none: an empty archive)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as archive:
        if content_bytes:
            member = tarfile.TarInfo("blob")
            member.size = content_bytes
            archive.addfile(member, io.BytesIO(os.urandom(content_bytes)))
    return buffer.getvalue()


def test_a_context_is_stored_in_chunks_and_read_back(fake_redis: fakeredis.FakeRedis, unit_settings: Settings) -> None:
    data = random_tar(9 * CHUNK + 1)  # eleven chunks, more than one pipeline flush
    chunks = -(-len(data) // CHUNK)
    assert chunks > 8
    context = packed(data)
    assert upload_context(fake_redis, unit_settings, context) is True
    assert fake_redis.hgetall(f"unit:team:default:ctx:{context.digest}:meta") == {b"size": str(len(data)).encode(), b"chunks": str(chunks).encode()}
    assert len(fake_redis.keys(f"unit:team:default:ctx:{context.digest}:*")) == chunks + 1
    assert context.file.tell() == 0, "the caller can read the file again"
    with download_context(fake_redis, unit_settings, context.digest) as archive:
        assert archive.read() == data


def test_an_empty_context_round_trips(fake_redis: fakeredis.FakeRedis, unit_settings: Settings) -> None:
    empty = random_tar(0)
    context = packed(empty)
    upload_context(fake_redis, unit_settings, context)
    assert has_context(fake_redis, unit_settings, context.digest)
    with download_context(fake_redis, unit_settings, context.digest) as archive:
        assert archive.read() == empty


def test_every_key_expires_after_the_context_ttl(fake_redis: fakeredis.FakeRedis, clock: Clock) -> None:
    settings = make_settings(context_ttl_s=300)
    context = packed(random_tar(3 * CHUNK))
    upload_context(fake_redis, settings, context)
    assert {fake_redis.ttl(name) for name in fake_redis.keys("*")} == {300}
    clock.advance(301)
    assert not has_context(fake_redis, settings, context.digest)
    assert fake_redis.keys("*") == []


def test_uploading_again_writes_nothing_but_renews_every_key(fake_redis: fakeredis.FakeRedis, clock: Clock) -> None:
    settings = make_settings(context_ttl_s=300)
    context = packed(random_tar(3 * CHUNK))
    upload_context(fake_redis, settings, context)
    clock.advance(200)
    fake_redis.set(f"unit:team:default:ctx:{context.digest}:0", "marker", keepttl=True)
    assert upload_context(fake_redis, settings, context) is False
    assert fake_redis.get(f"unit:team:default:ctx:{context.digest}:0") == b"marker", "no chunk was written again"
    assert {fake_redis.ttl(name) for name in fake_redis.keys("*")} == {300}


def test_an_incomplete_upload_is_not_there(fake_redis: fakeredis.FakeRedis, unit_settings: Settings) -> None:
    context = packed(random_tar(2 * CHUNK))
    fake_redis.set(f"unit:team:default:ctx:{context.digest}:0", b"chunk without meta")
    assert not has_context(fake_redis, unit_settings, context.digest)
    with pytest.raises(ContextMissing, match="not in the store"):
        download_context(fake_redis, unit_settings, context.digest)


def test_a_lost_chunk_is_reported(fake_redis: fakeredis.FakeRedis, unit_settings: Settings) -> None:
    context = packed(random_tar(3 * CHUNK))
    upload_context(fake_redis, unit_settings, context)
    fake_redis.delete(f"unit:team:default:ctx:{context.digest}:1")
    with pytest.raises(ContextMissing, match="lost chunk 1"):
        download_context(fake_redis, unit_settings, context.digest)


def test_a_corrupt_chunk_is_reported(fake_redis: fakeredis.FakeRedis, unit_settings: Settings) -> None:
    context = packed(random_tar(3 * CHUNK))
    upload_context(fake_redis, unit_settings, context)
    fake_redis.set(f"unit:team:default:ctx:{context.digest}:2", os.urandom(CHUNK))
    with pytest.raises(ContextMissing, match="corrupt"):
        download_context(fake_redis, unit_settings, context.digest)


def test_contexts_of_another_key_prefix_are_not_seen(fake_redis: fakeredis.FakeRedis, unit_settings: Settings) -> None:
    context = packed(random_tar(4))
    upload_context(fake_redis, make_settings(key_prefix="other:"), context)
    assert not has_context(fake_redis, unit_settings, context.digest)


def test_uploading_again_after_a_chunk_was_lost_repairs_the_context(
    fake_redis: fakeredis.FakeRedis, unit_settings: Settings
) -> None:
    data = random_tar(3 * CHUNK)
    context = packed(data)
    upload_context(fake_redis, unit_settings, context)
    fake_redis.delete(f"unit:team:default:ctx:{context.digest}:1")
    upload_context(fake_redis, unit_settings, context)
    with download_context(fake_redis, unit_settings, context.digest) as archive:
        assert archive.read() == data


def test_a_corrupt_context_found_on_download_is_replaced_by_the_next_upload(
    fake_redis: fakeredis.FakeRedis, unit_settings: Settings
) -> None:
    data = random_tar(3 * CHUNK)
    context = packed(data)
    upload_context(fake_redis, unit_settings, context)
    fake_redis.set(f"unit:team:default:ctx:{context.digest}:2", os.urandom(CHUNK))
    with pytest.raises(ContextMissing, match="send the build again"):
        download_context(fake_redis, unit_settings, context.digest)
    assert not has_context(fake_redis, unit_settings, context.digest), "the broken context is forgotten"
    assert upload_context(fake_redis, unit_settings, context) is True
    with download_context(fake_redis, unit_settings, context.digest) as archive:
        assert archive.read() == data


def test_an_upload_sends_at_most_a_few_chunks_per_round_trip(
    fake_redis: fakeredis.FakeRedis, unit_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The caller's memory holds ``CONTEXT_UPLOAD_CHUNKS_IN_FLIGHT`` chunks at most, never the whole context."""
    sizes: list[int] = []
    pipeline_class = type(fake_redis.pipeline())
    execute = pipeline_class.execute

    def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        sizes.append(sum(1 for args, _options in self.command_stack if args[0] == "SET"))
        return execute(self, *args, **kwargs)

    monkeypatch.setattr(pipeline_class, "execute", counting)
    data = random_tar(9 * CHUNK + 1)
    upload_context(fake_redis, unit_settings, packed(data))
    assert sum(sizes) == -(-len(data) // CHUNK) and max(sizes) == context_store.CONTEXT_UPLOAD_CHUNKS_IN_FLIGHT == 2


def test_a_chunk_evicted_while_the_context_is_uploaded_fails_the_upload_clearly(
    fake_redis: fakeredis.FakeRedis, unit_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store (allkeys-lru) may evict a chunk of the context being uploaded: the upload checks and says so."""
    context = packed(random_tar(3 * CHUNK))
    write = context_store._write_chunks

    def evicting(connection: Any, settings: Settings, what: PackedContext) -> int:
        count = write(connection, settings, what)
        connection.delete(f"unit:team:default:ctx:{what.digest}:0")
        return count

    monkeypatch.setattr(context_store, "_write_chunks", evicting)
    with pytest.raises(ContextMissing, match="evicted from the context store while it was uploaded.*DOCKYARD_CONTEXT_STORE_MAX_BYTES"):
        upload_context(fake_redis, unit_settings, context)


def test_the_download_is_checked_by_one_digest_call(
    fake_redis: fakeredis.FakeRedis, unit_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``archive_matches`` alone decides whether the downloaded tar is the context (one call to swap)."""
    context = packed(random_tar(3 * CHUNK))
    upload_context(fake_redis, unit_settings, context)
    monkeypatch.setattr(context_store, "archive_matches", lambda archive, digest: False)
    with pytest.raises(ContextMissing, match="is corrupt"):
        download_context(fake_redis, unit_settings, context.digest)


def test_archive_matches_reads_from_the_start_and_rewinds() -> None:
    data = random_tar(3 * context_store.READ_BYTES + 5)
    archive = io.BytesIO(data)
    archive.seek(100)
    assert context_store.archive_matches(archive, bytes_digest(data))
    assert archive.tell() == 0
    assert not context_store.archive_matches(io.BytesIO(data[: len(data) // 2]), bytes_digest(data)), "a truncated tar"


def test_a_download_writes_to_a_file_not_memory(fake_redis: fakeredis.FakeRedis, unit_settings: Settings) -> None:
    context = packed(random_tar(3 * CHUNK))
    upload_context(fake_redis, unit_settings, context)
    with download_context(fake_redis, unit_settings, context.digest) as archive:
        assert not isinstance(archive, io.BytesIO) and archive.fileno() >= 0, "a temporary file on disk"


def test_a_context_evicted_once_while_uploaded_is_written_again(
    fake_redis: fakeredis.FakeRedis, unit_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = random_tar(3 * CHUNK)
    context = packed(data)
    write = context_store._write_chunks
    writes: list[int] = []

    def evicting_once(connection: Any, settings: Settings, what: PackedContext) -> int:
        count = write(connection, settings, what)
        writes.append(count)
        if len(writes) == 1:
            connection.delete(f"unit:team:default:ctx:{what.digest}:1")
        return count

    monkeypatch.setattr(context_store, "_write_chunks", evicting_once)
    assert upload_context(fake_redis, unit_settings, context) is True
    assert writes == [-(-len(data) // CHUNK)] * 2
    with download_context(fake_redis, unit_settings, context.digest) as archive:
        assert archive.read() == data


def test_the_stores_maxmemory_keeps_an_eighth_of_the_budget_for_chunks_in_flight() -> None:
    assert context_store.maxmemory_for(200 * 1024**2) == 175 * 1024**2
    assert context_store.maxmemory_for(dockyard.config.defaults.CONTEXT_STORE_MAX_BYTES) == 1879048192
