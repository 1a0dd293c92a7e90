"""A shared-root context is the one its spec names (issue 19, item 9): the worker digests the directory it builds.

A message can name one context's ``context_digest`` and point ``context_path``
at other files under the worker's shared root. ``shared_directory`` digests the
directory the way the caller did (``scan_context``, Docker's packing rules, no
digest cache) and refuses a mismatch before anything is built or stored.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import fakeredis
import pytest

from dockyard.config.settings import Settings
from dockyard.tasks.context.materialize import shared_directory
from dockyard.tasks.errors import ContextTooLarge, InvalidInput
from dockyard.tasks.prepare import prepare_build
from dockyard.tasks.request.spec import BuildSpec
from dockyard.tasks.worker.build import execute_build
from dockyard.tasks.worker.here import Here
from tests.unit.fakes import FakeEngine, Output
from tests.unit.support import make_settings

DOCKERFILE = b"FROM scratch\nCOPY app.txt /app/app.txt\n"
MISMATCH = "does not match the spec's context_digest"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    shared = tmp_path / "shared"
    shared.mkdir()
    return shared


def worker(root: Path, **overrides: Any) -> Settings:
    """A worker whose shared root is ``root`` (and the caller's settings too: the path transport)."""
    return make_settings(**{"host_id": "h1", "context_transport": "path", "shared_context_root": str(root), **overrides})


def project(directory: Path, content: str, dockerfile: bytes | None = DOCKERFILE) -> Path:
    directory.mkdir(parents=True)
    (directory / "app.txt").write_text(content)
    if dockerfile is not None:
        (directory / "Dockerfile").write_bytes(dockerfile)
    return directory


def spec_of(context: Path, settings: Settings, **params: Any) -> BuildSpec:
    spec, packed = prepare_build({"image_name": "app", "tag": "v1", "path": str(context), **params}, settings)
    packed.close()
    return spec


def pointed_at(spec: BuildSpec, directory: Path) -> BuildSpec:
    """``spec`` with its ``context_path`` moved, parsed as a worker parses a message (the key stays valid)."""
    return BuildSpec.parse({**spec.model_dump(), "context_path": str(directory)})


def test_a_spec_pointed_at_another_directory_under_the_root_is_refused(root: Path) -> None:
    settings = worker(root)
    real = project(root / "real", "real files\n")
    other = project(root / "other", "other files\n")  # the same Dockerfile: only the other files differ
    spec = spec_of(real, settings)
    assert spec_of(other, settings).dockerfile_digest == spec.dockerfile_digest
    with pytest.raises(InvalidInput, match=MISMATCH) as refused:
        shared_directory(pointed_at(spec, other), settings)
    assert str(other) in str(refused.value) and spec.context_digest in str(refused.value), "the mismatch is named"


def test_the_directory_the_spec_was_made_from_is_accepted(root: Path) -> None:
    settings = worker(root)
    real = project(root / "real", "real files\n")
    assert shared_directory(spec_of(real, settings), settings) == real.resolve()


def test_a_file_changed_since_the_spec_is_refused(root: Path) -> None:
    settings = worker(root)
    real = project(root / "real", "real files\n")
    spec = spec_of(real, settings)
    (real / "app.txt").write_text("changed after the digest\n")
    with pytest.raises(InvalidInput, match=MISMATCH):
        shared_directory(spec, settings)


def test_a_file_added_since_the_spec_is_refused(root: Path) -> None:
    settings = worker(root)
    real = project(root / "real", "real files\n")
    spec = spec_of(real, settings)
    (real / "extra.txt").write_text("not in the digest\n")
    with pytest.raises(InvalidInput, match=MISMATCH):
        shared_directory(spec, settings)


def test_same_size_and_times_do_not_vouch_for_a_changed_file(root: Path, tmp_path: Path) -> None:
    """The caller's digest cache would take unchanged stat data for unchanged content; the worker reads every file."""
    caller = worker(root, digest_cache_dir=str(tmp_path / "caller-cache"))
    real = project(root / "real", "real files\n")
    spec = spec_of(real, caller)
    times = os.stat(real / "app.txt")
    (real / "app.txt").write_text("fake files\n")  # the same length
    os.utime(real / "app.txt", ns=(times.st_atime_ns, times.st_mtime_ns))
    with pytest.raises(InvalidInput, match=MISMATCH):
        shared_directory(spec, caller)


def test_a_substituted_auto_context_is_refused(root: Path) -> None:
    settings = worker(root)
    real = project(root / "real", "real files\n", dockerfile=None)
    other = project(root / "other", "other files\n", dockerfile=None)
    spec = spec_of(real, settings, dockerfile="auto")
    assert shared_directory(spec, settings) == real.resolve()
    with pytest.raises(InvalidInput, match=MISMATCH):
        shared_directory(pointed_at(spec, other), settings)


def test_files_the_dockerignore_leaves_out_may_differ(root: Path) -> None:
    """The worker digests what Docker sends, with the spec's Dockerfile: the caller's rules, not every file."""
    settings = worker(root)
    real = project(root / "real", "real files\n")
    (real / ".dockerignore").write_text("scratch/\n")
    (real / "scratch").mkdir()
    (real / "scratch" / "notes").write_text("before\n")
    spec = spec_of(real, settings)
    (real / "scratch" / "notes").write_text("after, and longer\n")
    assert shared_directory(spec, settings) == real.resolve()


def test_a_dockerfile_elsewhere_in_the_context_is_digested_as_the_caller_did(root: Path) -> None:
    settings = worker(root)
    real = project(root / "real", "real files\n", dockerfile=None)
    (real / "build").mkdir()
    (real / "build" / "app.Dockerfile").write_bytes(DOCKERFILE)
    (real / ".dockerignore").write_text("build/\n")  # Docker still sends the Dockerfile it builds with
    spec = spec_of(real, settings, dockerfile="build/app.Dockerfile")
    assert shared_directory(spec, settings) == real.resolve()
    (real / "build" / "app.Dockerfile").write_bytes(DOCKERFILE)  # rewritten with the same bytes: still the one
    assert shared_directory(spec, settings) == real.resolve()


def test_a_directory_over_this_workers_limit_is_refused(root: Path) -> None:
    caller = worker(root)
    real = project(root / "real", "x" * 64 * 1024)
    spec = spec_of(real, caller)
    with pytest.raises(ContextTooLarge):
        shared_directory(spec, worker(root, context_max_bytes=16 * 1024))


def test_the_worker_builds_and_stores_nothing_for_a_substituted_directory(
    root: Path, fake_redis: fakeredis.FakeRedis, engine: FakeEngine
) -> None:
    settings = worker(root)
    real = project(root / "real", "real files\n")
    other = project(root / "other", "other files\n")
    forged = pointed_at(spec_of(real, settings), other)
    with pytest.raises(InvalidInput, match=MISMATCH):
        execute_build(forged, here=Here(settings, fake_redis, engine, Output()))  # type: ignore[arg-type]
    assert engine.builds == [], "nothing built"
    assert not fake_redis.keys("unit:build:*"), "nothing stored under the claimed key"
    assert not fake_redis.keys("unit:lease:*"), "its lease released"
    result = execute_build(spec_of(real, settings), here=Here(settings, fake_redis, engine, Output()))  # type: ignore[arg-type]
    assert result["cache"] == "built"  # type: ignore[index]
    assert len(engine.builds) == 1
