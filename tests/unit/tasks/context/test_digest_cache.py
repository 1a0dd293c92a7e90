"""dockyard.tasks.context.digest_cache through dockyard.tasks.context.scan: every change to a tree changes its digest, even with a warm cache.

Real files in temporary directories. Each case warms the cache first (a walk
an hour later, so no file is racy and the next walk reads nothing), then
changes the tree and checks the digest moved, to a full pack's digest.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from dockyard.tasks.context import scan as context_scan

from dockyard.tasks.context import digest_cache
from dockyard.tasks.context.pack import pack_context
from dockyard.tasks.context.scan import ContextScan, scan_context
from tests.unit.tasks.context.digest_trees import LaterClock

LIMIT = 64 * 1024**2


class Tree:
    """A small project with a warm digest cache."""

    def __init__(self, root: Path, cache_dir: Path) -> None:
        self.root, self.cache_dir = root, cache_dir
        (root / "src").mkdir(parents=True)
        (root / "Dockerfile").write_text("FROM scratch\nCOPY . /app\n")
        for index in range(20):
            (root / "src" / f"module{index}.py").write_text(f"VALUE = {index:04d}\n")

    def scan(self) -> ContextScan:
        return scan_context(self.root, max_bytes=LIMIT, cache_dir=str(self.cache_dir))

    def packed_digest(self) -> str:
        with pack_context(self.root, max_bytes=LIMIT) as packed:
            return packed.digest

    def warm(self) -> str:
        """Walk twice: the second walk must read nothing; return the digest."""
        self.scan()
        again = self.scan()
        assert again.files_read == 0, "the cache answers for every file"
        return again.digest


@pytest.fixture
def later(monkeypatch: pytest.MonkeyPatch) -> LaterClock:
    clock = LaterClock()
    monkeypatch.setattr(context_scan, "wall_clock_ns", clock)
    return clock


@pytest.fixture
def tree(tmp_path: Path, later: LaterClock) -> Tree:
    return Tree(tmp_path / "project", tmp_path / "cache")


def test_an_unchanged_tree_gives_a_full_packs_digest_from_the_cache_alone(tree: Tree) -> None:
    assert tree.warm() == tree.packed_digest()
    assert list(tree.cache_dir.iterdir()), "one cache file for the root"


def test_an_edit_keeping_size_and_mtime_changes_the_digest(tree: Tree) -> None:
    before = tree.warm()
    path = tree.root / "src" / "module7.py"
    info = os.stat(path)
    path.write_text("VALUE = 9999\n")  # same size
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))  # same mtime
    assert os.stat(path).st_size == info.st_size and os.stat(path).st_mtime_ns == info.st_mtime_ns
    after = tree.scan()
    assert after.digest != before
    assert after.digest == tree.packed_digest()


def test_adding_a_file_changes_the_digest(tree: Tree) -> None:
    before = tree.warm()
    (tree.root / "src" / "new.py").write_text("")
    assert tree.scan().digest not in (before, None)
    assert tree.scan().digest == tree.packed_digest()


def test_removing_a_file_changes_the_digest(tree: Tree) -> None:
    before = tree.warm()
    (tree.root / "src" / "module3.py").unlink()
    after = tree.scan().digest
    assert after != before and after == tree.packed_digest()


def test_renaming_a_file_changes_the_digest(tree: Tree) -> None:
    before = tree.warm()
    (tree.root / "src" / "module3.py").rename(tree.root / "src" / "module3b.py")
    after = tree.scan().digest
    assert after != before and after == tree.packed_digest()


def test_changing_a_files_mode_changes_the_digest(tree: Tree) -> None:
    before = tree.warm()
    (tree.root / "src" / "module3.py").chmod(0o755)
    after = tree.scan().digest
    assert after != before and after == tree.packed_digest()


def test_a_corrupt_cache_file_is_ignored(tree: Tree) -> None:
    good = tree.warm()
    (cache_file,) = tree.cache_dir.iterdir()
    for garbage in (b"", b"{not json", b'{"version": 1}', b"[1, 2]", cache_file.read_bytes()[:-40]):
        cache_file.write_bytes(garbage)
        scan = tree.scan()
        assert scan.digest == good and scan.files_read == 22, "every file read again"
    assert tree.scan().files_read == 0, "and the cache was written anew"


def test_a_cache_written_for_another_root_is_ignored(tree: Tree) -> None:
    """Entries that match every file's stat data but carry wrong digests, under another root's name: unused."""
    good = tree.warm()
    (cache_file,) = tree.cache_dir.iterdir()
    document = json.loads(cache_file.read_text())
    for fields in document["entries"].values():
        fields[-1] = "00" * 64  # a record (header and content digests) no file has
    document["root"] = "/somewhere/else"
    cache_file.write_text(json.dumps(document))
    scan = tree.scan()
    assert scan.files_read == 22 and scan.digest == good


def test_a_same_second_edit_is_caught_on_a_coarse_filesystem(
    tree: Tree, later: LaterClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A filesystem with whole-second times and no ctime: only the racy rule sees the edit.

    The walk happens at once after the file was written (no clock offset), so
    the file's mtime is within the racy margin of the walk that cached it.
    """
    later.offset_ns = 0
    monkeypatch.setattr(
        digest_cache, "stat_key", lambda info: (info.st_size, info.st_mtime_ns // 10**9 * 10**9, 0, 0, info.st_mode)
    )
    path = tree.root / "src" / "module7.py"
    second = time.time_ns() // 10**9 * 10**9
    os.utime(path, ns=(second, second))
    before = tree.scan()
    again = tree.scan()
    assert again.digest == before.digest
    path.write_text("VALUE = 9999\n")  # same size
    os.utime(path, ns=(second, second))  # within the same second: the same stat data on this filesystem
    after = tree.scan()
    assert after.digest != before.digest and after.digest == tree.packed_digest()
