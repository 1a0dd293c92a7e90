"""``dockyard.tasks.context.unpack.safe_unpack`` against hostile context archives: nothing outside the destination changes.

Each hostile archive aims at a canary directory next to the destination (and,
where it can, at an absolute path); the canary's listing, contents, inode
numbers and link counts are compared before and after. The same archives go
through ``tarfile``'s own ``data`` filter too, only to record whether this
Python is one of the patch levels that filter does not protect
(CVE-2025-4517): dockyard must not depend on the answer.
"""

from __future__ import annotations

import io
import os
import stat
import sys
import tarfile
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

from dockyard.tasks.errors import ContextTooLarge, UnsafeContext
from dockyard.tasks.context.unpack import safe_unpack

MAX_BYTES = 1024 * 1024
STEPS = "abcdefghijklmnop"


@dataclass(frozen=True)
class Member:
    """One member of a hand-made archive."""

    name: str
    kind: bytes = tarfile.REGTYPE
    content: bytes = b""
    linkname: str = ""
    mode: int = 0o644


def archive_of(members: Iterable[Member]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for each in members:
            info = tarfile.TarInfo(each.name)
            info.type, info.linkname, info.mode = each.kind, each.linkname, each.mode
            info.size = len(each.content) if each.kind == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(each.content) if info.size else None)
    return buffer.getvalue()


def realpath_limit_members(component_len: int, escape_to: str) -> list[Member]:
    """CVE-2025-4517 (after CPython's ``test_realpath_limit_attack``): a chain of long directories and
    short symlinks whose resolution overflows PATH_MAX, so ``os.path.realpath`` stops expanding it and
    the ``data`` filter sees an inside path; ``escape`` then points, through the chain, at ``escape_to``
    (relative to the destination's top); a hardlink to ``escape/flag`` is overwritten, and
    ``escape/newfile`` is written through the link."""
    component = "d" * component_len
    members: list[Member] = []
    path = ""
    for step in STEPS:
        members.append(Member(os.path.join(path, component), tarfile.DIRTYPE, mode=0o777))
        members.append(Member(os.path.join(path, step), tarfile.SYMTYPE, linkname=component))
        path = os.path.join(path, component)
    linkpath = os.path.join(*STEPS, "l" * 254)
    members.append(Member(linkpath, tarfile.SYMTYPE, linkname=os.path.join(*[".."] * len(STEPS))))
    members.append(Member("escape", tarfile.SYMTYPE, linkname=os.path.join(linkpath, escape_to)))
    members.append(Member("flaglink", tarfile.LNKTYPE, linkname=os.path.join("escape", "flag")))
    members.append(Member("flaglink", content=b"overwrite"))
    members.append(Member("escape/newfile", content=b"new"))
    return members


def realpath_limit_attack(destination: Path, escape_to: str) -> bytes:
    """The CVE-2025-4517 archive, its components sized so that the chain overflows PATH_MAX under ``destination``."""
    path_max = os.pathconf(destination.parent, "PC_PATH_MAX")
    component_len = min(255, (path_max - len(str(destination)) - 1) // (len(STEPS) + 1))
    return archive_of(realpath_limit_members(component_len, escape_to))


def hardlink_escape(relative_target: str, absolute_target: str) -> bytes:
    """Hardlinks to a file outside (by ``..`` and by an absolute name), then written through."""
    return archive_of([
        Member("Dockerfile", content=b"FROM scratch\n"),
        Member("climbing", tarfile.LNKTYPE, linkname=relative_target),
        Member("climbing", content=b"overwrite"),
        Member("absolute", tarfile.LNKTYPE, linkname=absolute_target),
        Member("absolute", content=b"overwrite"),
    ])


def absolute_symlink(target: Path) -> bytes:
    """A symlink to an absolute directory outside, then a file written through it."""
    return archive_of([
        Member("Dockerfile", content=b"FROM scratch\n"),
        Member("evil", tarfile.SYMTYPE, linkname=str(target)),
        Member("evil/newfile", content=b"new"),
        Member("evil/flag", content=b"overwrite"),
    ])


def _checksum(header: bytearray) -> None:
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)


def gnu_sparse_member(name: str, data: bytes, realsize: int) -> bytes:
    """An old-GNU sparse member (type ``S``): ``data`` at offset 0, then a hole up to ``realsize``."""
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644
    header = bytearray(info.tobuf(format=tarfile.GNU_FORMAT))
    assert len(header) == tarfile.BLOCKSIZE
    header[156:157] = tarfile.GNUTYPE_SPARSE
    header[386:398] = tarfile.itn(0, 12, tarfile.GNU_FORMAT)  # first entry: offset 0 ...
    header[398:410] = tarfile.itn(len(data), 12, tarfile.GNU_FORMAT)  # ... len(data) bytes
    header[482:483] = b"\0"  # no extended sparse headers
    header[483:495] = tarfile.itn(realsize, 12, tarfile.GNU_FORMAT)  # the size it unpacks to
    _checksum(header)
    padding = b"\0" * (-len(data) % tarfile.BLOCKSIZE)
    return bytes(header) + data + padding


def sparse_bomb(kind: str, realsize: int, dockerfile: bytes = b"FROM scratch\n") -> bytes:
    """A few KiB of archive declaring a ``realsize`` file: a GNU sparse member (old ``S`` type,
    or a pax header with ``GNU.sparse.*`` 0.1), after a Dockerfile."""
    data = b"x" * 4096
    assert len(dockerfile) <= tarfile.BLOCKSIZE
    head = archive_of([Member("Dockerfile", content=dockerfile)])[:2 * tarfile.BLOCKSIZE]
    if kind == "gnu":
        body = gnu_sparse_member("bomb", data, realsize)
    else:
        info = tarfile.TarInfo("GNUSparseFile.0/bomb")
        info.size, info.mode = len(data), 0o644
        info.pax_headers = {
            "GNU.sparse.major": "0", "GNU.sparse.minor": "1", "GNU.sparse.name": "bomb",
            "GNU.sparse.size": str(realsize), "GNU.sparse.map": f"0,{len(data)}",
        }
        body = info.tobuf(format=tarfile.PAX_FORMAT) + data  # 4096: whole blocks
    archive = head + body + b"\0" * (2 * tarfile.BLOCKSIZE)
    return archive + b"\0" * (-len(archive) % tarfile.RECORDSIZE)


def listing(root: Path, skip: str | None = None) -> dict[str, tuple[object, ...]]:
    """Everything under ``root`` but its entry ``skip``: type, mode, inode, link count, link target, contents."""
    found: dict[str, tuple[object, ...]] = {}
    for directory, names, files in os.walk(root):
        if Path(directory) == root and skip is not None:
            names[:] = [name for name in names if name != skip]
            files = [name for name in files if name != skip]
        for name in [*names, *files]:
            path = Path(directory) / name
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):
                extra: object = os.readlink(path)
            elif stat.S_ISREG(info.st_mode):
                extra = path.read_bytes()
            else:
                extra = None
            found[str(path.relative_to(root))] = (info.st_mode, info.st_ino, info.st_nlink, info.st_size, extra)
    return found


def escaping_links(destination: Path) -> list[str]:
    """Symlinks under ``destination`` whose target is absolute or climbs out of it (read as text)."""
    bad = []
    for directory, names, files in os.walk(destination):
        for name in [*names, *files]:
            path = Path(directory) / name
            if path.is_symlink():
                target = os.readlink(path)
                inside = os.path.normpath(os.path.join(os.path.relpath(directory, destination), target))
                if os.path.isabs(target) or inside == ".." or inside.startswith("../"):
                    bad.append(f"{path.relative_to(destination)} -> {target}")
    return bad


@dataclass
class Scene:
    """``outer/dest`` (the destination) next to ``outer/flag`` and ``outer/canary/flag``."""

    outer: Path
    destination: Path
    canary: Path
    absolute: Path  # an absolute path that must not come to exist

    def outside(self) -> dict[str, tuple[object, ...]]:
        return listing(self.outer, skip=self.destination.name)


@pytest.fixture
def scene(tmp_path: Path) -> Scene:
    outer = tmp_path / "outer"
    destination = outer / "dest"
    canary = outer / "canary"
    destination.mkdir(parents=True)
    canary.mkdir()
    (outer / "flag").write_bytes(b"original flag")
    (canary / "flag").write_bytes(b"original canary flag")
    (canary / "keep").mkdir()
    return Scene(outer, destination, canary, tmp_path / f"dockyard-escape-{uuid.uuid4().hex}")


def unpack_refused(scene: Scene, data: bytes, error: type[Exception] = UnsafeContext) -> None:
    """``data`` is refused with ``error``, and nothing outside the destination changed or appeared."""
    before = scene.outside()
    with pytest.raises(error):
        safe_unpack(io.BytesIO(data), scene.destination, max_bytes=MAX_BYTES)
    assert scene.outside() == before, "nothing outside the destination is created or changed"
    assert not scene.absolute.exists()
    assert escaping_links(scene.destination) == [], "no link left in the destination points outside it"


def stdlib_escapes(scene: Scene, data: bytes) -> bool:
    """Whether ``tarfile``'s ``data`` filter lets ``data`` change something outside the destination."""
    before = scene.outside()
    try:
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            tar.extractall(scene.destination, filter="data")
    except (tarfile.TarError, OSError, KeyError):
        pass
    return scene.outside() != before


# CPython patch levels with the fix of CVE-2025-4517 (gh-135034)
FIXED_IN = {(3, 9): 23, (3, 10): 18, (3, 11): 13, (3, 12): 11, (3, 13): 4}
DATA_FILTER_VULNERABLE = sys.version_info[:2] in FIXED_IN and sys.version_info[2] < FIXED_IN[sys.version_info[:2]]


def test_realpath_limit_attack_writes_nothing_outside(scene: Scene) -> None:
    unpack_refused(scene, realpath_limit_attack(scene.destination, ".."))
    assert (scene.outer / "flag").read_bytes() == b"original flag"
    assert not (scene.outer / "newfile").exists()


def test_realpath_limit_attack_on_an_absolute_target_writes_nothing(scene: Scene) -> None:
    climb = os.path.join(*[".."] * len(STEPS))  # to / for the kernel, still inside for os.path.realpath
    scene.absolute.mkdir()
    (scene.absolute / "flag").write_bytes(b"absolute flag")
    before = listing(scene.absolute)
    with pytest.raises(UnsafeContext):
        safe_unpack(io.BytesIO(realpath_limit_attack(scene.destination, climb + str(scene.absolute))),
                    scene.destination, max_bytes=MAX_BYTES)
    assert listing(scene.absolute) == before
    assert escaping_links(scene.destination) == []


def test_this_pythons_data_filter_against_the_realpath_limit_attack(tmp_path: Path) -> None:
    """Not dockyard's behaviour: records whether this interpreter's ``data`` filter is bypassed."""
    outer = tmp_path / "outer"
    (outer / "dest").mkdir(parents=True)
    (outer / "flag").write_bytes(b"original flag")
    scene = Scene(outer, outer / "dest", outer, tmp_path / "unused")
    escaped = stdlib_escapes(scene, realpath_limit_attack(scene.destination, ".."))
    assert escaped == DATA_FILTER_VULNERABLE, (
        f"Python {sys.version.split()[0]}: the data filter {'was' if escaped else 'was not'} bypassed"
    )
    if escaped:  # what safe_unpack prevents, shown on this Python
        assert (outer / "flag").read_bytes() == b"overwrite"
        assert (outer / "newfile").read_bytes() == b"new"


def test_this_pythons_data_filter_against_the_attack_on_an_absolute_target(tmp_path: Path) -> None:
    """Not dockyard's behaviour: the same chain climbing to / and down to an absolute directory."""
    outer, target = tmp_path / "outer", tmp_path / "target"
    (outer / "dest").mkdir(parents=True)
    target.mkdir()
    (target / "flag").write_bytes(b"original flag")
    scene = Scene(target, outer / "dest", target, tmp_path / "unused")
    climb = os.path.join(*[".."] * len(STEPS))
    escaped = stdlib_escapes(scene, realpath_limit_attack(scene.destination, climb + str(target)))
    assert escaped == DATA_FILTER_VULNERABLE


def test_hardlink_escape_writes_nothing_outside(scene: Scene) -> None:
    data = hardlink_escape("../canary/flag", str(scene.canary / "flag"))
    unpack_refused(scene, data)
    assert (scene.canary / "flag").read_bytes() == b"original canary flag"
    assert os.lstat(scene.canary / "flag").st_nlink == 1, "no hardlink made to the canary"


@pytest.mark.parametrize("target", ["../canary/flag", "ABSOLUTE"])
def test_each_hardlink_escape_alone_is_refused(scene: Scene, target: str) -> None:
    linkname = str(scene.canary / "flag") if target == "ABSOLUTE" else target
    unpack_refused(scene, archive_of([
        Member("link", tarfile.LNKTYPE, linkname=linkname), Member("link", content=b"overwrite"),
    ]))
    assert os.lstat(scene.canary / "flag").st_nlink == 1


def test_data_filter_refuses_the_plain_hardlink_escapes(scene: Scene) -> None:
    """Not dockyard's behaviour: the plain escapes are stopped by the filter on any 3.11.4+."""
    assert not stdlib_escapes(scene, hardlink_escape("../canary/flag", str(scene.canary / "flag")))
    assert not stdlib_escapes(scene, absolute_symlink(scene.canary))


def test_absolute_symlink_writes_nothing_outside(scene: Scene) -> None:
    unpack_refused(scene, absolute_symlink(scene.canary))
    assert not (scene.canary / "newfile").exists()
    assert not (scene.destination / "evil").is_symlink(), "the absolute link itself is refused"


def test_absolute_symlink_alone_is_refused(scene: Scene) -> None:
    unpack_refused(scene, archive_of([Member("evil", tarfile.SYMTYPE, linkname=str(scene.absolute))]))
    assert os.listdir(scene.destination) == []


@pytest.mark.parametrize("kind", ["gnu", "pax"])
def test_sparse_bomb_is_refused_before_anything_is_written(scene: Scene, kind: str) -> None:
    data = sparse_bomb(kind, realsize=1 << 40)
    assert len(data) < 16 * 1024, "a few KiB of archive"
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:  # the archive is what it claims: a sparse member of 1 TiB
        bomb = tar.getmember("bomb")
        assert bomb.issparse() and bomb.size == 1 << 40
    unpack_refused(scene, data)
    assert not (scene.destination / "bomb").exists()


@pytest.mark.parametrize("kind", ["gnu", "pax"])
def test_sparse_member_under_the_cap_is_refused_too(scene: Scene, kind: str) -> None:
    """A sparse member is refused as such, not only when its size trips the cap."""
    with pytest.raises(UnsafeContext, match="sparse"):
        safe_unpack(io.BytesIO(sparse_bomb(kind, realsize=8192)), scene.destination, max_bytes=MAX_BYTES)
    assert not (scene.destination / "bomb").exists()


def test_unpacked_total_is_capped(scene: Scene) -> None:
    data = archive_of([Member(f"part-{n}", content=b"z" * (MAX_BYTES // 4)) for n in range(5)])
    unpack_refused(scene, data, ContextTooLarge)


def test_in_context_symlinks_are_kept_as_links(scene: Scene) -> None:
    data = archive_of([
        Member("Dockerfile", content=b"FROM scratch\n"),
        Member("app.txt", content=b"hello\n"),
        Member("link.txt", tarfile.SYMTYPE, linkname="app.txt"),
        Member("sub", tarfile.DIRTYPE, mode=0o755),
        Member("sub/up.txt", tarfile.SYMTYPE, linkname="../app.txt"),
        Member("sub/dir-link", tarfile.SYMTYPE, linkname="."),
    ])
    before = scene.outside()
    safe_unpack(io.BytesIO(data), scene.destination, max_bytes=MAX_BYTES)
    assert os.readlink(scene.destination / "link.txt") == "app.txt"
    assert os.readlink(scene.destination / "sub" / "up.txt") == "../app.txt"
    assert os.readlink(scene.destination / "sub" / "dir-link") == "."
    assert (scene.destination / "link.txt").read_bytes() == b"hello\n"
    assert (scene.destination / "app.txt").is_file() and not (scene.destination / "app.txt").is_symlink()
    assert scene.outside() == before
