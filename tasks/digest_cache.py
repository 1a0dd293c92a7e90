"""The caller's per-file digest cache, like git's index: stat data of each file -> its digests.

One small JSON file per context root, in ``digest_cache_dir`` (written
atomically: a temporary file renamed over the old one). An entry maps a
relative path to the ``lstat`` fields it was digested with (size, mtime_ns,
inode, ctime_ns, mode) and to what the context digest needs of it: the length
and sha256 of its tar header and the sha256 of its content. An entry is used
only while every one of those fields is unchanged and the file is not *racy*:
a file whose mtime or ctime is not older than the walk that wrote the cache,
minus ``RACY_MARGIN_NS`` (coarse filesystem timestamps), is always read
again, as git does, so a same-second, same-size edit is never missed.

A cache that cannot be read, is corrupt, is of another version or root, or
is owned by someone else is ignored (and replaced at the next write).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from config import defaults

VERSION = 1
RACY_MARGIN_NS = int(defaults.DIGEST_CACHE_RACY_S * 1e9)


@dataclass(frozen=True)
class StatKey:
    """The ``lstat`` fields an entry is valid for."""

    size: int
    mtime_ns: int
    inode: int
    ctime_ns: int
    mode: int

    @classmethod
    def of(cls, info: os.stat_result) -> StatKey:
        return cls(info.st_size, info.st_mtime_ns, info.st_ino, info.st_ctime_ns, info.st_mode)


@dataclass(frozen=True)
class MemberDigests:
    """What the context digest needs of one member: its header's length and sha256, its content's sha256."""

    header_length: int
    header_sha256: bytes
    content_sha256: bytes


class DigestCache:
    """The entries of one context root, loaded from and saved to one file."""

    def __init__(self, path: Path | None, root: Path, entries: dict[str, tuple[StatKey, MemberDigests]], written_ns: int) -> None:
        self.path, self.root = path, root
        self._old = entries
        self._old_written_ns = written_ns
        self._new: dict[str, tuple[StatKey, MemberDigests]] = {}
        self._changed = False
        self._walk_started_ns = 0

    @classmethod
    def load(cls, directory: str, root: Path) -> DigestCache:
        """The cache of ``root`` in ``directory`` (empty if there is none usable); ``""`` keeps nothing."""
        if not directory:
            return cls(None, root, {}, 0)
        path = Path(directory) / (hashlib.sha256(os.fsencode(root)).hexdigest()[:40] + ".json")
        entries, written_ns = _read(path, root)
        return cls(path, root, entries, written_ns)

    def start_walk(self, now_ns: int) -> None:
        """Mark the walk's start: the entries written now are racy against it."""
        self._walk_started_ns = now_ns

    def lookup(self, name: str, key: StatKey) -> MemberDigests | None:
        """The remembered digests of ``name`` if its stat data is unchanged and it is not racy."""
        found = self._old.get(name)
        if found is None or found[0] != key:
            return None
        if max(key.mtime_ns, key.ctime_ns) >= self._old_written_ns - RACY_MARGIN_NS:
            return None  # changed too close to the last walk to trust the timestamps: read again
        self._new[name] = found
        return found[1]

    def remember(self, name: str, key: StatKey, digests: MemberDigests) -> None:
        self._new[name] = (key, digests)
        self._changed = True

    def save(self) -> None:
        """Write the entries seen in this walk, if anything changed; failures leave the old file."""
        if self.path is None or (not self._changed and self._new.keys() == self._old.keys()):
            return
        document = {
            "version": VERSION,
            "root": os.fsdecode(os.fsencode(self.root)),
            "written_ns": self._walk_started_ns,
            "entries": {name: _entry_json(key, digests) for name, (key, digests) in self._new.items()},
        }
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=".digests-", suffix=".tmp")
            try:
                with os.fdopen(fd, "w") as handle:
                    json.dump(document, handle, separators=(",", ":"))
                os.replace(temporary, self.path)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
        except OSError:
            return  # a cache that cannot be written only costs a full read next time


def _entry_json(key: StatKey, digests: MemberDigests) -> list[Any]:
    return [
        key.size, key.mtime_ns, key.inode, key.ctime_ns, key.mode,
        digests.header_length, digests.header_sha256.hex(), digests.content_sha256.hex(),
    ]


def _read(path: Path, root: Path) -> tuple[dict[str, tuple[StatKey, MemberDigests]], int]:
    """The entries and write time of the cache file at ``path``; nothing if it is missing, foreign or corrupt."""
    try:
        with open(path, "rb") as handle:
            if os.fstat(handle.fileno()).st_uid != os.getuid():
                return {}, 0
            document = json.loads(handle.read())
        if document["version"] != VERSION or document["root"] != os.fsdecode(os.fsencode(root)):
            return {}, 0
        written_ns = document["written_ns"]
        if not isinstance(written_ns, int):
            return {}, 0
        entries: dict[str, tuple[StatKey, MemberDigests]] = {}
        for name, fields in document["entries"].items():
            size, mtime_ns, inode, ctime_ns, mode, header_length, header_hex, content_hex = fields
            values = (size, mtime_ns, inode, ctime_ns, mode, header_length)
            if not isinstance(name, str) or not all(type(value) is int for value in values):
                return {}, 0
            header_sha, content_sha = bytes.fromhex(header_hex), bytes.fromhex(content_hex)
            if len(header_sha) != 32 or len(content_sha) != 32:
                return {}, 0
            entries[name] = (StatKey(size, mtime_ns, inode, ctime_ns, mode), MemberDigests(header_length, header_sha, content_sha))
        return entries, written_ns
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return {}, 0
