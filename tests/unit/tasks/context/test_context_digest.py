"""dockyard.tasks.context.digest: one digest, whether made while packing, from a stat walk or from a tar stream.

Real files in temporary directories; the digest of the stat walk (cold and
warm cache) must equal a full pack's on many generated trees, and a tar
changed in any byte that matters is refused by the store.
"""

from __future__ import annotations

import io
import os
import random
import tarfile
from pathlib import Path

import fakeredis
import pytest

from dockyard.config.settings import Settings
from dockyard.tasks.context.pack import pack_context
from dockyard.tasks.context.digest import ArchiveDigest
from dockyard.tasks.context.scan import scan_context
from dockyard.tasks.context.store import ContextMissing, download_context, upload_context
from dockyard.tasks.errors import InvalidInput
from dockyard.tasks.context.materialize import stored_archive
from dockyard.tasks.prepare import prepare_build
from dockyard.tasks.context import scan as context_scan
from tests.unit.tasks.context.digest_trees import LaterClock, make_tree
from tests.probes import archive_digest, bytes_digest

LIMIT = 64 * 1024**2


def packed_bytes(root: Path, dockerfile: str | None = None) -> tuple[str, int, bytes]:
    with pack_context(root, dockerfile=dockerfile, max_bytes=LIMIT) as packed:
        return packed.digest, packed.size, packed.file.read()


@pytest.mark.parametrize("seed", range(40))
def test_the_stat_walk_gives_a_full_packs_digest_and_size_on_many_trees(
    seed: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "ctx"
    dockerfile = make_tree(root, random.Random(seed))
    cache = str(tmp_path / "cache")
    digest, size, data = packed_bytes(root, dockerfile)
    assert (digest, size) == (bytes_digest(data), len(data)), "the pack digests what it writes"

    cold = scan_context(root, dockerfile=dockerfile, max_bytes=LIMIT, cache_dir=cache)
    assert (cold.digest, cold.size) == (digest, size)
    monkeypatch.setattr(context_scan, "wall_clock_ns", LaterClock())  # the files are now older than the racy margin
    aged = scan_context(root, dockerfile=dockerfile, max_bytes=LIMIT, cache_dir=cache)
    warm = scan_context(root, dockerfile=dockerfile, max_bytes=LIMIT, cache_dir=cache)
    assert warm.files_read == 0, "an unchanged tree is answered from the cache"
    assert (aged.digest, aged.size) == (warm.digest, warm.size) == (digest, size)


def test_the_digest_is_the_same_whatever_pieces_the_tar_arrives_in(tmp_path: Path) -> None:
    make_tree(tmp_path, random.Random(99))
    digest, _, data = packed_bytes(tmp_path)
    for piece in (1, 7, 511, 512, 513, 4096, 100_000):
        fed = ArchiveDigest()
        for start in range(0, len(data), piece):
            fed.update(data[start:start + piece])
        assert fed.hexdigest() == digest, piece
    assert archive_digest(io.BytesIO(data)) == digest


def one_file_tar(content: bytes, *, mode: int = 0o644, name: str = "app.py") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as archive:
        member = tarfile.TarInfo(name)
        member.size, member.mode = len(content), mode
        archive.addfile(member, io.BytesIO(content))
    return buffer.getvalue()


def test_every_change_that_a_tar_reader_sees_changes_the_digest() -> None:
    base = bytes_digest(one_file_tar(b"print(1)\n"))
    assert bytes_digest(one_file_tar(b"print(2)\n")) != base, "content"
    assert bytes_digest(one_file_tar(b"print(1)\n", mode=0o755)) != base, "mode"
    assert bytes_digest(one_file_tar(b"print(1)\n", name="app2.py")) != base, "name"
    assert bytes_digest(one_file_tar(b"print(1)\n")) == base, "and nothing else"


def test_a_malformed_tar_has_no_digest() -> None:
    data = one_file_tar(b"print(1)\n")
    with pytest.raises(InvalidInput, match="after its end marker"):
        bytes_digest(data + one_file_tar(b"hidden"))
    with pytest.raises(InvalidInput, match="truncated"):
        bytes_digest(data[:1024])
    with pytest.raises(InvalidInput, match="invalid header"):
        bytes_digest(b"x" * 512 + data)
    assert not ArchiveDigest().matches(bytes_digest(data)), "an empty stream is not the archive"


def pax_tar(name: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        archive.addfile(tarfile.TarInfo(name))
    return buffer.getvalue()


def test_members_whose_extent_tar_readers_could_disagree_on_are_refused() -> None:
    """pax headers (they can override a size) and old-style regular files: refused; GNU long names are fine."""
    long_name = "n" * 150
    with pytest.raises(InvalidInput, match="unsupported type b'x'"):
        bytes_digest(pax_tar(long_name))
    old_style = bytearray(one_file_tar(b"data"))
    old_style[156:157] = tarfile.AREGTYPE
    old_style[148:156] = tarfile.itn(tarfile.calc_chksums(bytes(old_style[:512]))[0], 8, tarfile.GNU_FORMAT)  # type: ignore[attr-defined]
    with pytest.raises(InvalidInput, match="unsupported type"):
        bytes_digest(bytes(old_style))
    assert bytes_digest(one_file_tar(b"data", name=long_name)).startswith("sha256:")


def tampered(data: bytes, offset: int) -> bytes:
    return data[:offset] + bytes([data[offset] ^ 1]) + data[offset + 1:]


@pytest.mark.parametrize("offset", [600, 2000], ids=["first file's content", "a later member"])
def test_the_store_refuses_a_tampered_tar_and_forgets_it(
    offset: int, tmp_path: Path, fake_redis: fakeredis.FakeRedis, unit_settings: Settings
) -> None:
    for index in range(4):
        (tmp_path / f"f{index}").write_bytes(os.urandom(700))
    with pack_context(tmp_path, max_bytes=LIMIT) as packed:
        data = packed.file.read()
        upload_context(fake_redis, unit_settings, packed)
        with download_context(fake_redis, unit_settings, packed.digest) as archive:
            assert archive.read() == data, "the untouched tar is accepted"
        meta = f"unit:team:default:ctx:{packed.digest}:meta"
        fake_redis.set(f"unit:team:default:ctx:{packed.digest}:0", tampered(data, offset), keepttl=True)  # one chunk
        with pytest.raises(ContextMissing, match="corrupt"):
            download_context(fake_redis, unit_settings, packed.digest)
        assert not fake_redis.exists(meta), "the tampered context is forgotten: the next upload replaces it"


def test_the_worker_refuses_a_spec_whose_stored_tar_was_tampered_with(
    tmp_path: Path, fake_redis: fakeredis.FakeRedis, unit_settings: Settings
) -> None:
    """What a worker does with a spec (dockyard.tasks.context.materialize.stored_archive): the tar's digest is recomputed."""
    (tmp_path / "Dockerfile").write_text("FROM scratch\nCOPY . /\n")
    (tmp_path / "app.py").write_text("print('hello')\n")
    spec, packed = prepare_build({"image_name": "app", "path": str(tmp_path)}, unit_settings)
    with packed:
        upload_context(fake_redis, unit_settings, packed)
        data = packed.file.read()
    with stored_archive(spec, fake_redis, unit_settings) as archive:
        assert archive.read() == data
    evil = data.replace(b"print('hello')", b"print('HACKD')")
    assert evil != data and len(evil) == len(data)
    fake_redis.set(f"unit:team:default:ctx:{spec.context_digest}:0", evil, keepttl=True)
    with pytest.raises(ContextMissing, match="corrupt"):
        with stored_archive(spec, fake_redis, unit_settings):
            pass
