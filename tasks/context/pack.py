"""Build contexts: packed as Docker packs them and digested (``dockyard.tasks.context.unpack`` unpacks them).

Packing honours ``.dockerignore`` with Docker's matching rules (docker-py's
port of Docker's pattern matcher) and writes a tar with normalised metadata
(sorted names, zero times and owners), so the same content gives the same
digest on any machine. The digest is ``dockyard.tasks.context.digest``'s (of the member
list), which ``dockyard.tasks.context.scan`` computes without packing.
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
import tempfile
from pathlib import Path
from collections.abc import Callable, Mapping
from typing import IO, Any, BinaryIO


from dockyard.tasks.context.digest import ArchiveDigest
from dockyard.tasks.errors import ContextTooLarge, InvalidInput

PACK_COPY_BUFFER_BYTES = 1024 * 1024  # read size when packing context files
PACK_IN_MEMORY_BYTES = 16 * 1024**2  # a packed context up to this size never touches the disk



class PackedContext:
    """A context's digest and size, and its tar: given, or packed by ``pack`` on first use of ``file``."""

    def __init__(
        self, digest: str, size: int, file: BinaryIO | None = None, *, pack: Callable[[], BinaryIO] | None = None
    ) -> None:
        if (file is None) == (pack is None):
            raise ValueError("a PackedContext takes either its file or a way to pack it")
        self.digest, self.size = digest, size
        self._file, self._pack = file, pack

    @property
    def file(self) -> BinaryIO:
        """The tar, at its start when first returned; packed now if it was not yet."""
        if self._file is None:
            assert self._pack is not None
            self._file = self._pack()
        return self._file

    def pack_now(self) -> None:
        """Pack the tar now, from the files as they are now (if it was not packed yet)."""
        _ = self.file

    @property
    def is_packed(self) -> bool:
        return self._file is not None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()

    def __enter__(self) -> PackedContext:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _HashingWriter:
    """A file-like sink that digests (``ArchiveDigest``) and counts what passes to ``target``."""

    def __init__(self, target: IO[bytes], limit: int) -> None:
        self.target = target
        self.digest = ArchiveDigest()
        self.size = 0
        self.limit = limit

    def write(self, data: bytes) -> int:
        self.size += len(data)
        if self.size > self.limit:
            raise ContextTooLarge(f"Build context is over the limit of {self.limit} bytes.")
        self.digest.update(data)
        return self.target.write(data)

    def tell(self) -> int:
        return self.size


def dockerignore_patterns(root: Path) -> list[str]:
    """The patterns of ``root/.dockerignore``, read as the Docker client reads them."""
    path = root / ".dockerignore"
    if not path.exists():
        return []
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def context_files(root: Path, dockerfile: str | None) -> list[str]:
    """Relative paths Docker would send for ``root``, sorted."""
    patterns = dockerignore_patterns(root)
    if not patterns:
        return sorted(_every_path(str(root)))
    # Imported here, not at the top: docker-py's package import loads its whole API client
    # (docker.api.build and more), which a caller needs only when a .dockerignore is matched.
    from docker.utils.build import exclude_paths

    return sorted(exclude_paths(str(root), patterns, dockerfile=dockerfile))


def _every_path(root: str) -> list[str]:
    """Every file and directory under ``root`` (symlinked directories not followed)."""
    found: list[str] = []
    for directory, dirnames, filenames in os.walk(root):
        relative = os.path.relpath(directory, root)
        prefix = "" if relative == "." else relative + "/"
        found.extend(prefix + name for name in dirnames)
        found.extend(prefix + name for name in filenames)
    return found


def context_directory(build_kwargs: Mapping[str, Any]) -> Path:
    """The caller's build context: ``path``, or the working directory."""
    context = Path(build_kwargs.get("path") or os.getcwd()).resolve()
    if not context.is_dir():
        raise InvalidInput(f"Build context {str(context)!r} is not a directory.")
    return context


def pack_context(root: Path, *, dockerfile: str | None = None, max_bytes: int) -> PackedContext:
    """Pack ``root`` into a temporary tar file; return it with its sha256 digest."""
    if not root.is_dir():
        raise InvalidInput(f"Build context {str(root)!r} is not a directory.")
    spool = tempfile.SpooledTemporaryFile(max_size=PACK_IN_MEMORY_BYTES)
    writer = _HashingWriter(spool, max_bytes)
    try:
        with tarfile.open(fileobj=writer, mode="w", format=tarfile.GNU_FORMAT) as archive:  # type: ignore[call-overload]
            archive.copybufsize = PACK_COPY_BUFFER_BYTES
            for name in context_files(root, dockerfile):
                _add(archive, root, name)
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return PackedContext(digest=writer.digest.hexdigest(), size=writer.size, file=spool)  # type: ignore[arg-type]


def member_info(path: Path, name: str, info: os.stat_result) -> tarfile.TarInfo | None:
    """The normalised tar header of ``path`` (lstat ``info``) under ``name``; None for what is not packed."""
    entry = tarfile.TarInfo(name)
    entry.mtime = 0
    entry.mode = stat.S_IMODE(info.st_mode)
    if stat.S_ISDIR(info.st_mode):
        entry.type = tarfile.DIRTYPE
    elif stat.S_ISLNK(info.st_mode):
        entry.type = tarfile.SYMTYPE
        entry.linkname = os.readlink(path)
    elif stat.S_ISREG(info.st_mode):
        entry.size = info.st_size
    else:
        return None  # sockets, devices and fifos are skipped, as the Docker client skips them
    return entry


def packed_size(header_bytes: int, content_bytes: int) -> int:
    """Size of the tar ``pack_context`` writes: headers, padded contents, end marker, record padding."""
    written = header_bytes + content_bytes + 2 * tarfile.BLOCKSIZE
    return written + (-written % tarfile.RECORDSIZE)


def _add(archive: tarfile.TarFile, root: Path, name: str) -> None:
    path = root / name
    entry = member_info(path, name, os.lstat(path))
    if entry is None:
        return
    if entry.isreg():
        with open(path, "rb") as handle:
            archive.addfile(entry, handle)
    else:
        archive.addfile(entry)


def private_directory(prefix: str = "dockyard-context-") -> Path:
    """A new directory only this process uses; remove it with ``remove_directory``."""
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-"))


def remove_directory(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
