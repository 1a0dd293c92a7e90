"""A spec's context on the worker, as the worker's own: streamed, unpacked with checks, or shared.

- docker-py: the stored tar goes to the engine as it is (nothing unpacked here);
- buildx: the stored tar is unpacked into a private directory by ``dockyard.tasks.context.unpack``;
- ``context_path`` (a shared filesystem): used only under the root the worker's
  own ``shared_context_root`` setting names; refused otherwise.

Either way the Dockerfile the worker will use is checked against the spec's
``dockerfile_digest``, and a shared directory's whole context against the spec's
``context_digest`` (the stored tar is fetched by its digest and checked by it), so
the build key matches what is really built.
"""

from __future__ import annotations

import contextlib
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import redis

from dockyard.config.settings import Settings
from dockyard.tasks.context.pack import private_directory, remove_directory
from dockyard.tasks.context.scan import scan_context
from dockyard.tasks.context.store import download_context
from dockyard.tasks.errors import InvalidInput
from dockyard.tasks.registry.base_images import check_bases
from dockyard.tasks.request.spec import BuildSpec, auto_dockerfile_bytes, dockerfile_digest
from dockyard.tasks.context.unpack import safe_unpack


def _mismatch(spec: BuildSpec) -> InvalidInput:
    return InvalidInput(f"Dockerfile {spec.dockerfile!r} in the context does not match the spec's dockerfile_digest.")


def check_archive_dockerfile(archive: BinaryIO, spec: BuildSpec) -> None:
    """The context tar's Dockerfile has the bytes the key was computed from, and the bases the spec names."""
    if spec.dockerfile == "auto":
        check_bases(spec, auto_dockerfile_bytes(spec.dockerfile_lines or []))
        return
    archive.seek(0)
    with tarfile.open(fileobj=archive, mode="r:") as tar:
        try:
            member = tar.getmember(spec.dockerfile)
        except KeyError:
            raise InvalidInput(f"Dockerfile {spec.dockerfile!r} is not in the build context.") from None
        handle = tar.extractfile(member) if member.isreg() else None
        content = handle.read() if handle is not None else None
        if content is None or dockerfile_digest(content) != spec.dockerfile_digest:
            raise _mismatch(spec)
        check_bases(spec, content)
    archive.seek(0)


def under_shared_root(path: str, settings: Settings) -> Path:
    """``path`` resolved, if this worker allows shared contexts and it is a directory under their root."""
    if settings.shared_context_root is None:
        raise InvalidInput(
            f"This worker reads no build context from its own disk ({path!r}): "
            "set DOCKYARD_SHARED_CONTEXT_ROOT on the worker to allow a shared filesystem."
        )
    root = Path(settings.shared_context_root).resolve()
    directory = Path(path).resolve()
    if not directory.is_relative_to(root) or not directory.is_dir():
        raise InvalidInput(f"Build context {path!r} is not a directory under DOCKYARD_SHARED_CONTEXT_ROOT {str(root)!r}.")
    return directory


def shared_directory(spec: BuildSpec, settings: Settings) -> Path:
    """The spec's ``context_path``, checked like any shared path, with its Dockerfile's digest and its context's.

    A message may name one context's ``context_digest`` (the key) and point ``context_path``
    at other files under the root: the directory is digested here as the caller digested
    it (``scan_context``, Docker's packing rules and the spec's Dockerfile) and refused unless
    it is the context the key names. Every file is read: no digest cache, whose stat data
    vouches for content only on the caller's own disk. The files could still change between
    this digest and the engine's read of them; the check narrows that window to the build's
    start, and a caller that changes its own files meanwhile is its own ``ContextChanged``.
    """
    directory = under_shared_root(str(spec.context_path), settings)
    if spec.dockerfile != "auto":
        dockerfile = (directory / spec.dockerfile).resolve()
        if not dockerfile.is_relative_to(directory) or not dockerfile.is_file():
            raise InvalidInput(f"Dockerfile {spec.dockerfile!r} not found inside {str(directory)!r}.")
        content = dockerfile.read_bytes()
        if dockerfile_digest(content) != spec.dockerfile_digest:
            raise _mismatch(spec)
        check_bases(spec, content)
    else:
        check_bases(spec, auto_dockerfile_bytes(spec.dockerfile_lines or []))
    check_shared_context(spec, directory, settings)
    return directory


def check_shared_context(spec: BuildSpec, directory: Path, settings: Settings) -> None:
    """``directory`` has the spec's ``context_digest`` (within this worker's ``context_max_bytes``)."""
    scan = scan_context(
        directory,
        dockerfile=None if spec.dockerfile == "auto" else spec.dockerfile,
        max_bytes=settings.context_max_bytes,
        cache_dir="",
    )
    if scan.digest != spec.context_digest:
        raise InvalidInput(
            f"Build context {str(directory)!r} does not match the spec's context_digest "
            f"({spec.context_digest} claimed, {scan.digest} found): nothing is built from it."
        )


@contextlib.contextmanager
def stored_archive(spec: BuildSpec, store: redis.Redis, settings: Settings) -> Iterator[BinaryIO]:
    """The spec's context tar from the context store (``store``), its digest and its Dockerfile checked."""
    with download_context(store, settings, spec.context_digest) as archive:
        check_archive_dockerfile(archive, spec)
        yield archive


@contextlib.contextmanager
def unpacked_directory(archive: BinaryIO, settings: Settings) -> Iterator[Path]:
    """``archive`` unpacked with dockyard's checks into a private directory, removed afterwards."""
    directory = private_directory()
    try:
        archive.seek(0)
        safe_unpack(archive, directory, max_bytes=settings.context_max_bytes)
        yield directory
    finally:
        remove_directory(directory)
