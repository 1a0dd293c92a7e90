"""Packing, digesting and safely unpacking build contexts; the context store (fakeredis)."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import fakeredis
import pytest

from dockyard.config.settings import Settings
from dockyard.tasks.context.pack import context_files, pack_context
from dockyard.tasks.errors import ContextTooLarge, UnsafeContext
from dockyard.tasks.context.unpack import safe_unpack
from dockyard.tasks.context.store import ContextMissing, download_context, upload_context
from tests.probes import has_context

LIMIT = 10 * 1024**2


def make_tree(root: Path) -> Path:
    (root / "src").mkdir(parents=True)
    (root / "src" / "app.py").write_text("print('hi')\n")
    (root / "Dockerfile").write_text("FROM scratch\n")
    (root / "build").mkdir()
    (root / "build" / "out.o").write_bytes(b"\0" * 10)
    (root / "notes.md").write_text("notes\n")
    (root / ".dockerignore").write_text("# comment\nbuild\n*.md\n!keep.md\n")
    (root / "keep.md").write_text("kept\n")
    return root


def digest(root: Path) -> str:
    packed = pack_context(root, max_bytes=LIMIT)
    packed.close()
    return packed.digest


def test_dockerignore_uses_dockers_rules(tmp_path: Path) -> None:
    files = context_files(make_tree(tmp_path), "Dockerfile")
    assert "build/out.o" not in files and "notes.md" not in files
    assert {"keep.md", "src/app.py", "Dockerfile", ".dockerignore"} <= set(files)


def test_digest_is_stable_across_copies_and_times(tmp_path: Path) -> None:
    first = make_tree(tmp_path / "a")
    second = make_tree(tmp_path / "b")
    os.utime(second / "src" / "app.py", (1, 1))
    assert digest(first) == digest(second)


def test_one_byte_changes_the_digest_but_ignored_files_do_not(tmp_path: Path) -> None:
    root = make_tree(tmp_path)
    before = digest(root)
    (root / "notes.md").write_text("changed, but ignored\n")
    (root / "build" / "new.o").write_bytes(b"x")
    assert digest(root) == before
    (root / "src" / "app.py").write_text("print('hI')\n")
    assert digest(root) != before


def test_mode_changes_the_digest(tmp_path: Path) -> None:
    root = make_tree(tmp_path)
    before = digest(root)
    (root / "src" / "app.py").chmod(0o755)
    assert digest(root) != before


def test_size_limit(tmp_path: Path) -> None:
    (tmp_path / "big").write_bytes(os.urandom(64 * 1024))
    with pytest.raises(ContextTooLarge, match="over the limit"):
        pack_context(tmp_path, max_bytes=32 * 1024)


def test_pack_then_unpack_round_trips(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "src-tree")
    (root / "link").symlink_to("src/app.py")
    packed = pack_context(root, max_bytes=LIMIT)
    target = tmp_path / "out"
    target.mkdir()
    safe_unpack(packed.file, target, max_bytes=1 << 30)
    packed.close()
    assert (target / "src" / "app.py").read_text() == "print('hi')\n"
    assert os.readlink(target / "link") == "src/app.py"
    assert not (target / "build").exists()


def malicious(member: tarfile.TarInfo, data: bytes = b"") -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        member.size = len(data)
        archive.addfile(member, io.BytesIO(data))
    buffer.seek(0)
    return buffer


@pytest.mark.parametrize(
    "member",
    [
        tarfile.TarInfo("../escape.txt"),
        tarfile.TarInfo("/abs/escape.txt"),
        tarfile.TarInfo("a/../../escape.txt"),
    ],
    ids=["dotdot", "absolute", "nested-dotdot"],
)
def test_unpack_refuses_names_outside(tmp_path: Path, member: tarfile.TarInfo) -> None:
    target = tmp_path / "ctx"
    target.mkdir()
    with pytest.raises(UnsafeContext):
        safe_unpack(malicious(member, b"x"), target, max_bytes=1 << 30)
    assert not (tmp_path / "escape.txt").exists()


@pytest.mark.parametrize("linkname", ["../../etc/passwd", "/etc/passwd"], ids=["relative", "absolute"])
def test_unpack_refuses_links_that_escape(tmp_path: Path, linkname: str) -> None:
    for kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
        target = tmp_path / f"ctx-{kind!r}"
        target.mkdir()
        member = tarfile.TarInfo("evil")
        member.type = kind
        member.linkname = linkname
        with pytest.raises(UnsafeContext):
            safe_unpack(malicious(member), target, max_bytes=1 << 30)
        assert not (target / "evil").exists()


def test_store_uploads_once_and_downloads_verified(tmp_path: Path) -> None:
    connection = fakeredis.FakeRedis()
    settings = Settings(key_prefix="unit:")
    (tmp_path / "f").write_bytes(os.urandom(9 * 1024**2))  # more than two chunks
    packed = pack_context(tmp_path, max_bytes=LIMIT * 2)
    assert upload_context(connection, settings, packed) is True
    assert upload_context(connection, settings, packed) is False, "same digest: no second upload"
    assert has_context(connection, settings, packed.digest)
    assert all(connection.ttl(name) > 0 for name in connection.keys("unit:team:default:ctx:*"))
    with download_context(connection, settings, packed.digest) as archive:
        packed.file.seek(0)
        assert archive.read() == packed.file.read()
    packed.close()


def test_store_refuses_over_the_limit_and_reports_missing(tmp_path: Path) -> None:
    connection = fakeredis.FakeRedis()
    (tmp_path / "f").write_bytes(os.urandom(4096))
    packed = pack_context(tmp_path, max_bytes=LIMIT)
    with pytest.raises(ContextTooLarge):
        upload_context(connection, Settings(context_max_bytes=1024), packed)
    packed.close()
    assert connection.keys("*") == []
    with pytest.raises(ContextMissing):
        download_context(connection, Settings(), "sha256:" + "0" * 64)


def test_without_dockerignore_the_file_list_is_dockers(tmp_path: Path) -> None:
    from docker.utils.build import exclude_paths

    root = make_tree(tmp_path / "t")
    (root / ".dockerignore").unlink()
    (root / "src" / "deep" / "er").mkdir(parents=True)
    (root / "src" / "deep" / "er" / "f").write_text("x")
    (root / "linkdir").symlink_to("src")
    assert context_files(root, "Dockerfile") == sorted(exclude_paths(str(root), [], dockerfile="Dockerfile"))
