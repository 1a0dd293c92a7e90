"""dockyard.tasks.context.pack: packing and unpacking build contexts, the cases tests/farm/test_local_context.py leaves out.

That file covers .dockerignore rules, digest stability, modes, the size
limit, a round trip with a symlink, and refusal of escaping names and links.
"""

from __future__ import annotations

import hashlib
import io
import os
import socket
import tarfile
from pathlib import Path

import pytest

from dockyard.tasks.context.pack import (
    dockerignore_patterns,
    pack_context,
    private_directory,
    remove_directory,
)
from dockyard.tasks.errors import ContextTooLarge, InvalidInput, UnsafeContext
from dockyard.tasks.context.unpack import safe_unpack

LIMIT = 1024**2


def members(root: Path) -> list[tarfile.TarInfo]:
    packed = pack_context(root, max_bytes=LIMIT)
    with tarfile.open(fileobj=packed.file, mode="r") as archive:
        found = archive.getmembers()
    packed.close()
    return found


def test_a_path_that_is_not_a_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    for path in (tmp_path / "file", tmp_path / "missing"):
        with pytest.raises(InvalidInput, match="is not a directory"):
            pack_context(path, max_bytes=LIMIT)


def test_members_are_sorted_with_times_and_owners_zeroed(tmp_path: Path) -> None:
    (tmp_path / "b").write_text("b")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "z").write_text("z")
    found = members(tmp_path)
    assert [member.name for member in found] == ["a", "a/z", "b"]
    assert {(member.mtime, member.uid, member.gid, member.uname, member.gname) for member in found} == {(0, 0, 0, "", "")}


def test_the_digest_and_size_describe_the_tar(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("content")
    packed = pack_context(tmp_path, max_bytes=LIMIT)
    data = packed.file.read()
    packed.close()
    assert packed.size == len(data)
    # one member: the digest of its header block's and its content's sha256 (dockyard.tasks.context.digest)
    record = hashlib.sha256(data[:512]).digest() + hashlib.sha256(data[512:519]).digest()
    assert data[512:519] == b"content"
    assert packed.digest == "sha256:" + hashlib.sha256(b"dockyard-context-digest-v1\n" + record).hexdigest()


def test_a_symlink_is_packed_as_a_link_not_followed(tmp_path: Path) -> None:
    (tmp_path / "outside.txt").write_text("secret outside the context")
    root = tmp_path / "ctx"
    root.mkdir()
    (root / "link").symlink_to(tmp_path / "outside.txt")
    (link,) = members(root)
    assert link.issym() and link.linkname == str(tmp_path / "outside.txt") and link.size == 0


def test_sockets_are_skipped(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(tmp_path / "sock"))
        assert [member.name for member in members(tmp_path)] == ["f"]
    finally:
        server.close()


def test_the_limit_counts_the_tar_not_the_files(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x" * 100)  # 100 bytes of content, a 10 KiB GNU tar
    with pytest.raises(ContextTooLarge):
        pack_context(tmp_path, max_bytes=1024)
    assert issubclass(ContextTooLarge, InvalidInput)


def test_dockerignore_patterns_skip_comments_and_blank_lines(tmp_path: Path) -> None:
    assert dockerignore_patterns(tmp_path) == []
    (tmp_path / ".dockerignore").write_text("# comment\n\n  build  \n*.md\n!keep.md\n")
    assert dockerignore_patterns(tmp_path) == ["build", "*.md", "!keep.md"]


def test_unpacking_what_is_not_a_tar_is_invalid_input(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="not a valid tar") as raised:
        safe_unpack(io.BytesIO(b"this is not a tar archive" * 40), tmp_path, max_bytes=1 << 30)
    assert not isinstance(raised.value, UnsafeContext)


def test_unpacking_a_device_is_refused(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        device = tarfile.TarInfo("dev")
        device.type = tarfile.CHRTYPE
        archive.addfile(device)
    buffer.seek(0)
    with pytest.raises(UnsafeContext):
        safe_unpack(buffer, tmp_path, max_bytes=1 << 30)
    assert not (tmp_path / "dev").exists()


def test_unpacking_drops_set_uid_bits(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        member = tarfile.TarInfo("tool")
        member.mode = 0o4755
        member.size = 2
        archive.addfile(member, io.BytesIO(b"#!"))
    buffer.seek(0)
    safe_unpack(buffer, tmp_path, max_bytes=1 << 30)
    assert os.stat(tmp_path / "tool").st_mode & 0o7777 == 0o755


def test_private_directories_are_new_and_removed(tmp_path: Path) -> None:
    first, second = private_directory(), private_directory()
    try:
        assert first != second and first.is_dir() and not any(first.iterdir())
        assert first.name.startswith("dockyard-context-")
        assert oct(first.stat().st_mode & 0o777) == oct(0o700)
    finally:
        (first / "f").write_text("x")
        remove_directory(first)
        remove_directory(second)
    assert not first.exists() and not second.exists()
    remove_directory(first)  # removing twice is fine
