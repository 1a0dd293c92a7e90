"""A context's digest and packed size from a stat walk, reading only files the digest cache cannot vouch for.

``scan_context`` walks the files ``pack_context`` would pack, in the same
order, and feeds ``dockyard.tasks.context.digest.MemberDigest`` each member's header
and content digests: from ``dockyard.tasks.context.digest_cache`` when the file's stat data is
unchanged, else by building the header and reading the file. The result is
the digest a full pack gives. ``lazy_context`` wraps it in a
``PackedContext`` that packs only when its tar is asked for (an upload),
and checks that the tar it packs has the digest announced.
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from dockyard.tasks.context.pack import PackedContext, context_files, member_info, pack_context, packed_size
from dockyard.tasks.context.digest import EMPTY_SHA256, MemberDigest, header_bytes
from dockyard.tasks.context import digest_cache
from dockyard.tasks.context.digest_cache import DigestCache, MemberDigests, StatKey
from dockyard.tasks.errors import ContextChanged, ContextTooLarge, InvalidInput

READ_BYTES = 1024 * 1024


def wall_clock_ns() -> int:
    """The time a walk starts at (files changed after it minus the racy margin are read again)."""
    return time.time_ns()


@dataclass(frozen=True)
class ContextScan:
    """A context's digest and the size of its tar, and how many files had to be read."""

    digest: str
    size: int
    files_read: int


def scan_context(root: Path, *, dockerfile: str | None = None, max_bytes: int, cache_dir: str) -> ContextScan:
    """The digest and packed size of ``root``'s context, as ``pack_context`` would give them."""
    if not root.is_dir():
        raise InvalidInput(f"Build context {str(root)!r} is not a directory.")
    cache = DigestCache.load(cache_dir, root)
    cache.start_walk(wall_clock_ns())
    digest = MemberDigest()
    headers = contents = files_read = 0
    prefix = os.path.join(str(root), "")
    for name in context_files(root, dockerfile):
        path = prefix + name
        info = os.lstat(path)
        key = digest_cache.stat_key(info)
        member = cache.lookup(name, key)
        if member is None:
            member = _digest_member(Path(path), name, info)
            if member is None:
                continue
            files_read += 1
            if _unchanged_since(path, key):
                cache.remember(name, key, member)
        headers += member.header_length
        if stat.S_ISREG(info.st_mode):
            contents += -(-info.st_size // 512) * 512
        if packed_size(headers, contents) > max_bytes:
            raise ContextTooLarge(f"Build context is over the limit of {max_bytes} bytes.")
        digest.add(member.record)
    cache.save()
    return ContextScan(digest=digest.hexdigest(), size=packed_size(headers, contents), files_read=files_read)


def _digest_member(path: Path, name: str, info: os.stat_result) -> MemberDigests | None:
    """The header and content digests of one member, read from disk; None if it is not packed."""
    entry = member_info(path, name, info)
    if entry is None:
        return None
    header = header_bytes(entry)
    content = _file_sha256(path, entry.size) if entry.isreg() else EMPTY_SHA256
    return MemberDigests(len(header), hashlib.sha256(header).digest() + content)


def _file_sha256(path: Path, size: int) -> bytes:
    """The sha256 of the first ``size`` bytes of ``path`` (what the pack copies); shorter means it changed."""
    content = hashlib.sha256()
    left = size
    with open(path, "rb") as handle:
        while left > 0:
            block = handle.read(min(READ_BYTES, left))
            if not block:
                raise ContextChanged(f"{str(path)!r} shrank while it was read; send the build again.")
            content.update(block)
            left -= len(block)
    return content.digest()


def _unchanged_since(path: str, key: StatKey) -> bool:
    """Whether ``path`` still has the stat data it was read with (else its digest is not remembered)."""
    try:
        return digest_cache.stat_key(os.lstat(path)) == key
    except OSError:
        return False


def lazy_context(root: Path, *, dockerfile: str | None, max_bytes: int, cache_dir: str) -> PackedContext:
    """``root``'s context by digest and size now; its tar packed only when ``file`` is first used."""
    scan = scan_context(root, dockerfile=dockerfile, max_bytes=max_bytes, cache_dir=cache_dir)

    def pack() -> BinaryIO:
        packed = pack_context(root, dockerfile=dockerfile, max_bytes=max_bytes)
        if packed.digest != scan.digest:
            packed.close()
            raise ContextChanged(
                f"Build context {str(root)!r} changed while the build was prepared "
                f"({scan.digest} announced, {packed.digest} packed); send the build again."
            )
        return packed.file

    return PackedContext(digest=scan.digest, size=scan.size, pack=pack)

