"""dockyard.tasks.context.unpack.safe_unpack: a symlink to exactly ``..`` climbs out and is refused, and
no hardlink is unpacked, not even one to a file inside the context (issue 19, items 3 and 4)."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from dockyard.tasks.context.unpack import safe_unpack
from dockyard.tasks.errors import UnsafeContext
from tests.unit.tasks.context.test_unpack import Member, archive_of

MAX_BYTES = 1024 * 1024


@pytest.fixture
def destination(tmp_path: Path) -> Path:
    path = tmp_path / "outer" / "dest"
    path.mkdir(parents=True)
    return path


def entries(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*"))


@pytest.mark.parametrize(
    ("name", "target"),
    [("up", ".."), ("sub/up", "../.."), ("sub/up", "../sub/../.."), ("up", "./..")],
    ids=["top-level ..", "nested ../..", "roundabout", "dot-slash .."],
)
def test_a_symlink_to_exactly_the_parent_of_the_context_is_refused(destination: Path, name: str, target: str) -> None:
    """Each target resolves, from the link's directory, to exactly ``..``: the context's parent."""
    members = [Member("sub", tarfile.DIRTYPE, mode=0o755)] if name.startswith("sub/") else []
    data = archive_of([*members, Member(name, tarfile.SYMTYPE, linkname=target)])
    with pytest.raises(UnsafeContext, match="outside the context"):
        safe_unpack(io.BytesIO(data), destination, max_bytes=MAX_BYTES)
    assert not os.path.lexists(destination / name), "the climbing link is not made"


def test_a_symlink_to_the_context_itself_is_kept(destination: Path) -> None:
    """The boundary's inside: ``sub/top -> ..`` is the context's top, not its parent."""
    data = archive_of([Member("sub", tarfile.DIRTYPE, mode=0o755), Member("sub/top", tarfile.SYMTYPE, linkname="..")])
    safe_unpack(io.BytesIO(data), destination, max_bytes=MAX_BYTES)
    assert os.readlink(destination / "sub" / "top") == ".."


@pytest.mark.parametrize("linkname", ["app.txt", "./app.txt", "sub/inner.txt"])
def test_a_hardlink_to_a_file_inside_the_context_is_refused(destination: Path, linkname: str) -> None:
    """No hardlink at all: not even one whose target is a member already unpacked inside the context."""
    data = archive_of([
        Member("app.txt", content=b"hello\n"),
        Member("sub", tarfile.DIRTYPE, mode=0o755),
        Member("sub/inner.txt", content=b"inner\n"),
        Member("copy.txt", tarfile.LNKTYPE, linkname=linkname),
    ])
    with pytest.raises(UnsafeContext, match="hardlink"):
        safe_unpack(io.BytesIO(data), destination, max_bytes=MAX_BYTES)
    assert not os.path.lexists(destination / "copy.txt"), "neither a link nor a copy is made"
    assert os.lstat(destination / "app.txt").st_nlink == 1
    assert entries(destination) == ["app.txt", "sub", "sub/inner.txt"]
