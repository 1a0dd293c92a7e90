"""Unpacking a caller's context archive with dockyard's own checks, on any Python patch level.

``tarfile``'s ``data`` filter alone is not enough on older patch levels
(CVE-2025-4517: nested long symlinks plus a hardlink write outside the
destination), so nothing here relies on it or on ``os.path.realpath``:

- member names are relative and never climb (no absolute name, no ``..``);
- no member is written through a symlink: every parent is a real directory
  made here, checked with ``lstat``, and files are opened with ``O_NOFOLLOW``;
- a symlink's target is relative and stays inside the context: it is resolved
  component by component within the archive's own names, following the links
  the archive holds (``_Links``), and refused if it ever climbs above the root;
  every link is resolved again once the whole archive is in, since a later
  link can change what an earlier target goes through. It is kept as a link,
  as Docker keeps it;
- hardlinks, devices, fifos and sparse members are refused;
- the unpacked total is capped, counted as bytes are written.
"""

from __future__ import annotations

import os
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


MAX_LINK_HOPS = 40  # links followed while resolving one target (the kernel's ELOOP limit)


def _outside(parts: list[str], target: str) -> UnsafeContext:
    return UnsafeContext(f"Build context archive refused: link {'/'.join(parts)!r} points to {target!r}, outside the context")


class _Links:
    """The archive's symlinks so far, by their components, and the resolution of targets through them."""

    def __init__(self) -> None:
        self.targets: dict[tuple[str, ...], str] = {}

    def add(self, parts: list[str], target: str) -> None:
        """Check ``target`` against the links so far, then record the link."""
        self.check(parts, target)
        self.targets[tuple(parts)] = target

    def check(self, parts: list[str], target: str) -> None:
        """``target``, read from the link's directory and through the archive's links, stays inside the context."""
        if not target or target.startswith("/"):
            raise _outside(parts, target)
        resolved = list(parts[:-1])  # the link's directory: real directories (``_parent``)
        pending = list(reversed(target.split("/")))
        hops = 0
        while pending:
            part = pending.pop()
            if part in ("", "."):
                continue
            if part == "..":
                if not resolved:
                    raise _outside(parts, target)
                resolved.pop()
                continue
            followed = self.targets.get((*resolved, part))
            if followed is None:
                resolved.append(part)
                continue
            hops += 1
            if hops > MAX_LINK_HOPS or not followed or followed.startswith("/"):
                raise UnsafeContext(
                    f"Build context archive refused: link {'/'.join(parts)!r} goes through too many links "
                    f"or one outside the context ({target!r})"
                )
            pending.extend(reversed(followed.split("/")))  # read from the followed link's directory: ``resolved``

    def check_all(self) -> None:
        """Every link again, against all of the archive's links."""
        for parts, target in self.targets.items():
            self.check(list(parts), target)


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


def _unpack_member(tar: tarfile.TarFile, member: tarfile.TarInfo, root: Path, budget: _Budget, links: _Links) -> None:
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
        links.add(parts, member.linkname)
        os.symlink(member.linkname, target)
        return
    source = tar.extractfile(member)
    if source is None:
        raise InvalidInput(f"Build context archive has no data for {member.name!r}.")
    _write_file(member, source, target, budget)


def safe_unpack(archive: BinaryIO, destination: Path, *, max_bytes: int) -> None:
    """Unpack ``archive`` into the empty directory ``destination`` with the checks above."""
    budget = _Budget(max_bytes)
    links = _Links()
    try:
        with tarfile.open(fileobj=archive, mode="r|") as tar:
            for member in tar:
                _unpack_member(tar, member, destination, budget, links)
        links.check_all()
    except FileExistsError as exc:
        raise UnsafeContext(f"Build context archive refused: {exc.filename!r} appears twice") from exc
    except OSError as exc:
        if isinstance(exc, (UnsafeContext, ContextTooLarge)):
            raise
        raise UnsafeContext(f"Build context archive refused: {exc}") from exc
    except tarfile.TarError as exc:
        raise InvalidInput(f"Build context archive is not a valid tar: {exc}") from exc
