"""The content-addressed context store in Redis: chunked, size-limited, expiring.

Keys: ``ctx:<digest>:meta`` (size and chunk count, written last) and
``ctx:<digest>:<n>`` chunks. A context counts as present only while its meta
and every chunk are there; one found corrupt or incomplete on download loses
its meta, so the next upload replaces it.
"""

from __future__ import annotations

import tempfile
from typing import BinaryIO

import redis

from config import defaults
from config.settings import Settings
from tasks.context import PackedContext
from tasks.context_digest import ArchiveDigest
from tasks.errors import ContextMissing, ContextTooLarge
from tasks.keyspace import key


def _meta_key(settings: Settings, digest: str) -> str:
    return key(settings, "ctx", digest, "meta")


def _chunk_key(settings: Settings, digest: str, index: int) -> str:
    return key(settings, "ctx", digest, str(index))


def upload_context(connection: redis.Redis, settings: Settings, packed: PackedContext) -> bool:
    """Store ``packed`` unless its digest is already there; return True if it was uploaded."""
    if packed.size > settings.context_max_bytes:
        raise ContextTooLarge(
            f"Build context is {packed.size} bytes, over the limit of {settings.context_max_bytes}."
        )
    meta = _meta_key(settings, packed.digest)
    chunks = connection.hget(meta, "chunks")
    if chunks is not None and _touch(connection, settings, packed.digest, int(chunks)):
        return False  # complete: every chunk is there, and lives on
    packed.file.seek(0)
    count = 0
    pipe = connection.pipeline(transaction=False)
    while block := packed.file.read(defaults.CONTEXT_CHUNK_BYTES):
        pipe.set(_chunk_key(settings, packed.digest, count), block, ex=settings.context_ttl_s)
        count += 1
        if count % 8 == 0:
            pipe.execute()
    pipe.hset(meta, mapping={"size": packed.size, "chunks": count})
    pipe.expire(meta, settings.context_ttl_s)
    pipe.execute()
    packed.file.seek(0)
    return True


def _touch(connection: redis.Redis, settings: Settings, digest: str, chunks: int) -> bool:
    """Renew the context's keys; False if one of them is gone (the context must be uploaded again)."""
    pipe = connection.pipeline(transaction=False)
    pipe.expire(_meta_key(settings, digest), settings.context_ttl_s)
    for index in range(chunks):
        pipe.expire(_chunk_key(settings, digest, index), settings.context_ttl_s)
    return all(pipe.execute())


def has_context(connection: redis.Redis, settings: Settings, digest: str) -> bool:
    return bool(connection.exists(_meta_key(settings, digest)))


def _forget(connection: redis.Redis, settings: Settings, digest: str, what: str) -> ContextMissing:
    """Drop a broken context's metadata, so the next upload replaces it; the error to raise."""
    connection.delete(_meta_key(settings, digest))
    return ContextMissing(f"Build context {digest} {what} in the store: it was removed; send the build again.")


def download_context(connection: redis.Redis, settings: Settings, digest: str) -> BinaryIO:
    """The context's tar in a temporary file, its digest verified (``tasks.context_digest``)."""
    meta = connection.hgetall(_meta_key(settings, digest))
    if not meta:
        raise ContextMissing(f"Build context {digest} is not in the store (expired or never uploaded).")
    spool = tempfile.TemporaryFile()
    hasher = ArchiveDigest()
    try:
        for index in range(int(meta[b"chunks"])):
            block = connection.get(_chunk_key(settings, digest, index))
            if not isinstance(block, bytes):
                raise _forget(connection, settings, digest, f"lost chunk {index}")
            hasher.update(block)
            spool.write(block)
        if not hasher.matches(digest):
            raise _forget(connection, settings, digest, "is corrupt")
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return spool
