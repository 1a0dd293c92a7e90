"""The content-addressed context store: a Redis of its own, chunked, bounded, streamed both ways.

Contexts never go to the broker's Redis: they live in the store that
``context_store_url`` names, a Redis with its own ``maxmemory`` budget and
``volatile-ttl`` (see the README, "The context store"). Every key expires
``context_ttl_s`` after the context was last uploaded or asked for, so the
store, when full, evicts the contexts whose expiry is nearest, those asked for
longest ago, and never stops the broker or the results.

Keys, in the uploading team's namespace (``team:<team>:``, which only that
team's store user may write; a worker reads the namespace of the message's
team, so a team builds only contexts it sent): ``ctx:<digest>:meta`` (size and
chunk count, written last) and ``ctx:<digest>:<n>`` chunks. Any of them may be evicted on its own, so a
context counts as present only while its meta and every chunk are there.
An upload reads and sends a few chunks at a time, a download writes one chunk
at a time to a temporary file: neither holds a whole context in memory. The
downloaded tar is checked against its digest in one call (``archive_matches``).
"""

from __future__ import annotations

import tempfile
from typing import BinaryIO

import redis

from dockyard.config.settings import Settings
from dockyard.tasks.context.pack import PackedContext
from dockyard.tasks.context.digest import ArchiveDigest
from dockyard.tasks.errors import ContextMissing, ContextTooLarge
from dockyard.tasks.teams.keys import team_key

CONTEXT_CHUNK_BYTES = 4 * 1024**2  # contexts are stored in Redis in chunks of this size
CONTEXT_UPLOAD_CHUNKS_IN_FLIGHT = 2  # an upload sends this many chunks per round trip (bounds the caller's memory)

def maxmemory_for(budget_bytes: int) -> int:
    """The store's ``maxmemory`` for a budget: seven eighths of it, the last eighth kept for the chunks
    being received (Redis counts them, and evicts only before each command, after they arrived)."""
    return budget_bytes // 8 * 7


READ_BYTES = 1024**2  # the digest check reads the downloaded tar this much at a time
UPLOAD_ATTEMPTS = 2  # an upload the store evicted part of before it ended is written again once


def meta_key(settings: Settings, digest: str) -> str:
    """``ctx:<digest>``: the hash of a stored context (its chunk count), present while it is stored."""
    return team_key(settings, "ctx", digest, "meta")


def _chunk_key(settings: Settings, digest: str, index: int) -> str:
    return team_key(settings, "ctx", digest, str(index))


def upload_context(connection: redis.Redis, settings: Settings, packed: PackedContext) -> bool:
    """Store ``packed`` unless the store holds it complete; return True if it was uploaded.

    ``ContextMissing`` if the store evicted part of it before the upload ended,
    ``UPLOAD_ATTEMPTS`` times (the store's budget is too small for it, or too busy).
    """
    if packed.size > settings.context_max_bytes:
        raise ContextTooLarge(
            f"Build context is {packed.size} bytes, over the limit of {settings.context_max_bytes}."
        )
    chunks = connection.hget(meta_key(settings, packed.digest), "chunks")
    if chunks is not None and _touch(connection, settings, packed.digest, int(chunks)):
        return False  # complete: every chunk is there, and lives on
    for _attempt in range(UPLOAD_ATTEMPTS):
        count = _write_chunks(connection, settings, packed)
        if _touch(connection, settings, packed.digest, count):
            return True
    raise ContextMissing(
        f"Build context {packed.digest} ({packed.size} bytes) was evicted from the context store while it "
        f"was uploaded ({UPLOAD_ATTEMPTS} times): the store's budget (DOCKYARD_CONTEXT_STORE_MAX_BYTES) is too "
        "small for it, or the store is too busy; send the build again."
    )


def _write_chunks(connection: redis.Redis, settings: Settings, packed: PackedContext) -> int:
    """Send the tar's chunks, a few per round trip, then its meta; the number of chunks."""
    packed.file.seek(0)
    count = 0
    pipe = connection.pipeline(transaction=False)
    while block := packed.file.read(CONTEXT_CHUNK_BYTES):
        pipe.set(_chunk_key(settings, packed.digest, count), block, ex=settings.context_ttl_s)
        count += 1
        if count % CONTEXT_UPLOAD_CHUNKS_IN_FLIGHT == 0:
            pipe.execute()
    meta = meta_key(settings, packed.digest)
    pipe.hset(meta, mapping={"size": packed.size, "chunks": count})
    pipe.expire(meta, settings.context_ttl_s)
    pipe.execute()
    packed.file.seek(0)
    return count


def _touch(connection: redis.Redis, settings: Settings, digest: str, chunks: int) -> bool:
    """Renew the context's keys (their expiry: the store evicts the nearest first); False if one is gone."""
    pipe = connection.pipeline(transaction=False)
    pipe.expire(meta_key(settings, digest), settings.context_ttl_s)
    for index in range(chunks):
        pipe.expire(_chunk_key(settings, digest, index), settings.context_ttl_s)
    return all(pipe.execute())


def _forget(connection: redis.Redis, settings: Settings, digest: str, what: str) -> ContextMissing:
    """Drop a broken context's metadata, so the next upload replaces it; the error to raise."""
    connection.delete(meta_key(settings, digest))
    return ContextMissing(f"Build context {digest} {what} in the store: it was removed; send the build again.")


def archive_matches(archive: BinaryIO, digest: str) -> bool:
    """Whether the tar, read from its start, is a well-formed context of ``digest`` (``dockyard.tasks.context.digest``)."""
    hasher = ArchiveDigest()
    archive.seek(0)
    while block := archive.read(READ_BYTES):
        hasher.update(block)
    archive.seek(0)
    return hasher.matches(digest)


def download_context(connection: redis.Redis, settings: Settings, digest: str) -> BinaryIO:
    """The context's tar in a temporary file, written a chunk at a time, its digest verified."""
    meta = connection.hgetall(meta_key(settings, digest))
    if not meta:
        raise ContextMissing(
            f"Build context {digest} is not in the store (evicted, expired or never uploaded); send the build again."
        )
    spool = tempfile.TemporaryFile()
    try:
        for index in range(int(meta[b"chunks"])):
            block = connection.get(_chunk_key(settings, digest, index))
            if not isinstance(block, bytes):
                raise _forget(connection, settings, digest, f"lost chunk {index}")
            spool.write(block)
            del block
        if not archive_matches(spool, digest):
            raise _forget(connection, settings, digest, "is corrupt")
    except BaseException:
        spool.close()
        raise
    return spool
