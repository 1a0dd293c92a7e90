"""Unpacking a caller's context archive with dockyard's own checks, on any Python patch level.

``tarfile``'s ``data`` filter alone is not enough on older patch levels
(CVE-2025-4517: nested long symlinks plus a hardlink write outside the
destination), so nothing here relies on it or on ``os.path.realpath``:

- member names are relative and never climb (no absolute name, no ``..``);
- no member is written through a symlink: every parent is a real directory
  made here, checked with ``lstat``, and files are opened with ``O_NOFOLLOW``;
- a symlink's target is relative and stays inside the context, read as text;
  it is kept as a link, as Docker keeps it;
- hardlinks, devices, fifos and sparse members are refused;
- the unpacked total is capped, counted as bytes are written.
"""

from __future__ import annotations

import os
import posixpath
import stat
import tarfile
from pathlib import Path
from typing import IO, BinaryIO

from dockyard.tasks.errors import ContextTooLarge, InvalidInput, UnsafeContext

COPY_BYTES = 1024 * 1024


def _parts(name: str) -> list[str]:
    """The components of a member name that stays inside the context."""
    if name.startswith("/") or "\\" in name:
        raise UnsafeContext(f"Build context archive refused: member {name!r} is outside the context")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if not parts or ".." in parts:
        raise UnsafeContext(f"Build context archive refused: member {name!r} is outside the context")
    return parts


def _check_link_target(parts: list[str], target: str) -> None:
    """A symlink's target is relative and, read from the link's directory, stays inside the context."""
    if not target or target.startswith("/"):
        raise UnsafeContext(f"Build context archive refused: link {'/'.join(parts)!r} points to {target!r}, outside the context")
    resolved = posixpath.normpath(posixpath.join(*parts[:-1], target) if len(parts) > 1 else target)
    if resolved == ".." or resolved.startswith("../"):
        raise UnsafeContext(f"Build context archive refused: link {'/'.join(parts)!r} points to {target!r}, outside the context")


def _parent(root: Path, parts: list[str]) -> Path:
    """The member's directory, made as real directories; refused if any step is a link or a file."""
    current = root
    for part in parts[:-1]:
        current = current / part
        try:
            info = os.lstat(current)
        except FileNotFoundError:
            os.mkdir(current, 0o755)
            continue
        if not stat.S_ISDIR(info.st_mode):
            raise UnsafeContext(f"Build context archive refused: {'/'.join(parts)!r} goes through a link or file")
    return current


class _Budget:
    """Counts unpacked bytes against the cap."""

    def __init__(self, max_bytes: int) -> None:
        self.left = max_bytes
        self.max_bytes = max_bytes

    def take(self, size: int) -> None:
        self.left -= size
        if self.left < 0:
            raise ContextTooLarge(f"Build context unpacks to more than {self.max_bytes} bytes.")


def _write_file(member: tarfile.TarInfo, source: IO[bytes], target: Path, budget: _Budget) -> None:
    budget.take(member.size)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    fd = os.open(target, flags, stat.S_IMODE(member.mode) & 0o755 | 0o600)
    with os.fdopen(fd, "wb") as handle:
        left = member.size
        while left > 0:
            block = source.read(min(COPY_BYTES, left))
            if not block:
                raise InvalidInput(f"Build context archive is truncated in {member.name!r}.")
            handle.write(block)
            left -= len(block)


def _unpack_member(tar: tarfile.TarFile, member: tarfile.TarInfo, root: Path, budget: _Budget) -> None:
    parts = _parts(member.name)
    if member.issparse():
        raise UnsafeContext(f"Build context archive refused: sparse member {member.name!r}")
    if not (member.isreg() or member.isdir() or member.issym()):
        kind = "hardlink" if member.islnk() else "device, fifo or other special file"
        raise UnsafeContext(f"Build context archive refused: {kind} {member.name!r}")
    parent = _parent(root, parts)
    target = parent / parts[-1]
    if member.isdir():
        try:
            os.mkdir(target, 0o755)
        except FileExistsError:
            if not stat.S_ISDIR(os.lstat(target).st_mode):
                raise UnsafeContext(f"Build context archive refused: {member.name!r} is not a directory") from None
        return
    if member.issym():
        _check_link_target(parts, member.linkname)
        os.symlink(member.linkname, target)
        return
    source = tar.extractfile(member)
    if source is None:
        raise InvalidInput(f"Build context archive has no data for {member.name!r}.")
    _write_file(member, source, target, budget)


def safe_unpack(archive: BinaryIO, destination: Path, *, max_bytes: int) -> None:
    """Unpack ``archive`` into the empty directory ``destination`` with the checks above."""
    budget = _Budget(max_bytes)
    try:
        with tarfile.open(fileobj=archive, mode="r|") as tar:
            for member in tar:
                _unpack_member(tar, member, destination, budget)
    except FileExistsError as exc:
        raise UnsafeContext(f"Build context archive refused: {exc.filename!r} appears twice") from exc
    except OSError as exc:
        if isinstance(exc, (UnsafeContext, ContextTooLarge)):
            raise
        raise UnsafeContext(f"Build context archive refused: {exc}") from exc
    except tarfile.TarError as exc:
        raise InvalidInput(f"Build context archive is not a valid tar: {exc}") from exc
