"""dockyard.tasks.context.digest_cache: the racy rule's ctime half. A file whose mtime is old but whose
ctime is not older than the walk that wrote the cache (minus the margin) is read again, not taken from
the cache (issue 19, item 6)."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from dockyard.tasks.context import digest_cache
from dockyard.tasks.context import scan as context_scan
from dockyard.tasks.context.digest_cache import RACY_MARGIN_NS, DigestCache, MemberDigests
from dockyard.tasks.context.pack import pack_context
from dockyard.tasks.context.scan import scan_context

LIMIT = 64 * 1024**2
HOUR_NS = 3600 * 10**9
DIGESTS = MemberDigests(512, hashlib.sha256(b"header").digest() + hashlib.sha256(b"content").digest())


def cache_with(key: digest_cache.StatKey, written_ns: int) -> DigestCache:
    """A loaded cache holding one entry for ``name``, written by a walk at ``written_ns``."""
    return DigestCache(None, Path("/ctx"), {"name": [*key, DIGESTS.header_length, DIGESTS.record.hex()]}, written_ns)


@pytest.mark.parametrize("ctime_after_walk_ns", [-RACY_MARGIN_NS, -RACY_MARGIN_NS // 2, 0, 10**9])
def test_an_old_mtime_with_a_racy_ctime_is_not_trusted(ctime_after_walk_ns: int) -> None:
    walk_ns = time.time_ns()
    key = (13, walk_ns - HOUR_NS, 42, walk_ns + ctime_after_walk_ns, 0o100644)
    assert cache_with(key, walk_ns).lookup("name", key) is None, "changed too close to the walk: read again"


def test_old_mtime_and_ctime_are_trusted() -> None:
    """The rule's other side: both times older than the margin, the entry answers."""
    walk_ns = time.time_ns()
    key = (13, walk_ns - HOUR_NS, 42, walk_ns - RACY_MARGIN_NS - 1, 0o100644)
    assert cache_with(key, walk_ns).lookup("name", key) == DIGESTS


def test_an_edit_with_an_old_mtime_and_the_same_coarse_ctime_changes_the_digest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file's mtime is set back an hour (``touch -d``, an unpacked archive, ``rsync -t``) and its ctime is
    now. On a filesystem whose ctime does not move between two edits (coarse timestamps, modelled by a
    fixed ctime) and without inodes, a same-size edit that sets the mtime back again has the same stat
    data: only the ctime half of the racy rule makes the walk read it again."""
    root, cache_dir = tmp_path / "project", tmp_path / "cache"
    root.mkdir()
    (root / "Dockerfile").write_text("FROM scratch\nCOPY . /app\n")
    path = root / "app.txt"
    path.write_text("VALUE = 0001\n")
    old_ns = time.time_ns() - HOUR_NS
    for each in (root / "Dockerfile", path):
        os.utime(each, ns=(old_ns, old_ns))
    coarse_ctime_ns = time.time_ns()  # what the filesystem shows for both edits
    monkeypatch.setattr(
        digest_cache, "stat_key", lambda info: (info.st_size, info.st_mtime_ns, 0, coarse_ctime_ns, info.st_mode)
    )
    monkeypatch.setattr(context_scan, "wall_clock_ns", time.time_ns)  # the walks happen now: ctime is racy

    before = scan_context(root, max_bytes=LIMIT, cache_dir=str(cache_dir))
    again = scan_context(root, max_bytes=LIMIT, cache_dir=str(cache_dir))
    assert again.files_read == 2, "old mtimes but racy ctimes: every file is read again"
    assert again.digest == before.digest

    path.write_text("VALUE = 9999\n")  # same size
    os.utime(path, ns=(old_ns, old_ns))  # the same mtime again: the same stat data as cached
    after = scan_context(root, max_bytes=LIMIT, cache_dir=str(cache_dir))
    with pack_context(root, max_bytes=LIMIT) as packed:
        assert after.digest != before.digest and after.digest == packed.digest
