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


DIGEST_CACHE_RACY_S = 2.0  # a file changed this close to (or after) the last digest walk is read again: coarse filesystem timestamps

VERSION = 1
RACY_MARGIN_NS = int(DIGEST_CACHE_RACY_S * 1e9)


StatKey = tuple[int, int, int, int, int]  # size, mtime_ns, inode, ctime_ns, mode


def stat_key(info: os.stat_result) -> StatKey:
    """The ``lstat`` fields an entry is valid for."""
    return (info.st_size, info.st_mtime_ns, info.st_ino, info.st_ctime_ns, info.st_mode)


@dataclass(frozen=True)
class MemberDigests:
    """What the context digest needs of one member: its header's length, and its record
    (the sha256 of its header then the sha256 of its content, ``dockyard.tasks.context.digest``)."""

    header_length: int
    record: bytes


Entry = list[Any]  # as stored: the five StatKey fields, the header's length, the record in hex


class DigestCache:
    """The entries of one context root, loaded from and saved to one file.

    Entries stay as read from JSON; one is checked and decoded only when its
    stat data matches (a walk of an unchanged tree decodes each once).
    """

    def __init__(self, path: Path | None, root: Path, entries: dict[str, Entry], written_ns: int) -> None:
        self.path, self.root = path, root
        self._old = entries
        self._racy_after_ns = written_ns - RACY_MARGIN_NS
        self._new: dict[str, Entry] = {}
        self._changed = False
        self._walk_started_ns = 0

    @classmethod
    def load(cls, directory: str, root: Path) -> DigestCache:
        """The cache of ``root`` in ``directory`` (empty if there is none usable); ``""`` keeps nothing."""
        if not directory:
            return cls(None, root, {}, 0)
        path = Path(directory) / cache_file_name(root)
        entries, written_ns = _read(path, root)
        return cls(path, root, entries, written_ns)

    def start_walk(self, now_ns: int) -> None:
        """Mark the walk's start: the entries written now are racy against it."""
        self._walk_started_ns = now_ns

    def lookup(self, name: str, key: StatKey) -> MemberDigests | None:
        """The remembered digests of ``name`` if its stat data is unchanged and it is not racy."""
        entry = self._old.get(name)
        if entry is None or tuple(entry[:5]) != key:
            return None
        if key[1] >= self._racy_after_ns or key[3] >= self._racy_after_ns:
            return None  # changed too close to the last walk to trust the timestamps: read again
        digests = _decoded(entry)
        if digests is not None:
            self._new[name] = entry
        return digests

    def remember(self, name: str, key: StatKey, digests: MemberDigests) -> None:
        self._new[name] = [*key, digests.header_length, digests.record.hex()]
        self._changed = True

    def save(self) -> None:
        """Write the entries seen in this walk, if anything changed; failures leave the old file."""
        if self.path is None or (not self._changed and self._new.keys() == self._old.keys()):
            return
        document = {"version": VERSION, "root": str(self.root), "written_ns": self._walk_started_ns, "entries": self._new}
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


def cache_file_name(root: Path) -> str:
    """The file of ``root``'s cache: named by a digest of the root's path."""
    return hashlib.sha256(os.fsencode(root)).hexdigest()[:40] + ".json"


def _decoded(entry: Entry) -> MemberDigests | None:
    """An entry's digests; None if it is malformed (then it is read again, and rewritten)."""
    try:
        header_length, record_hex = entry[5:]
        record = bytes.fromhex(record_hex)
    except (ValueError, TypeError):
        return None
    if type(header_length) is not int or len(record) != 64:
        return None
    return MemberDigests(header_length, record)


def _read(path: Path, root: Path) -> tuple[dict[str, Entry], int]:
    """The entries and write time of the cache file at ``path``; nothing if it is missing, foreign or corrupt."""
    try:
        with open(path, "rb") as handle:
            if os.fstat(handle.fileno()).st_uid != os.getuid():
                return {}, 0
            document = json.loads(handle.read())
        if document["version"] != VERSION or document["root"] != str(root):
            return {}, 0
        written_ns, entries = document["written_ns"], document["entries"]
        if type(written_ns) is not int or not isinstance(entries, dict):
            return {}, 0
        if not all(type(entry) is list for entry in entries.values()):
            return {}, 0
        return entries, written_ns
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return {}, 0
