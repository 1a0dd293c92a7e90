"""The context digest: a digest of a tar's member list, composable from per-file digests.

A context's digest is ``sha256:`` and the sha256 of ``DOMAIN`` followed by
one 64-byte record per member, in archive order: the sha256 of the member's
raw header bytes (its GNU long-name blocks included) and the sha256 of its
content (of nothing for directories, links and other header-only members).
It is not the sha256 of the tar's bytes: unlike that, it can be computed
without writing the tar, from each file's header and a remembered content
digest (``dockyard.tasks.context.scan``), and it is the same whichever way it is made:

- while packing (``dockyard.tasks.context.pack.pack_context`` feeds ``ArchiveDigest`` what it writes);
- from a stat walk with the per-file cache (``dockyard.tasks.context.scan``);
- from a tar stream (``ArchiveDigest.update``/``matches``), how the store verifies a download
  (``dockyard.tasks.context.store.archive_matches``).

``ArchiveDigest`` reads the tar strictly: the end-of-archive marker must be
there and nothing but zeros may follow it, so no byte that a tar reader
could act on is left out of the digest.
"""

from __future__ import annotations

import hashlib
import tarfile

from dockyard.tasks.errors import InvalidInput

DOMAIN = b"dockyard-context-digest-v1\n"
BLOCK = tarfile.BLOCKSIZE
ZERO_BLOCK = bytes(BLOCK)
EMPTY_SHA256 = hashlib.sha256(b"").digest()
READ_BYTES = 1024 * 1024

# Only the member types whose layout every tar reader agrees on are accepted. pax headers (which can
# override a member's size), old-style regular files ("\0", a directory when the name ends in "/"),
# sparse files and devices are refused: with them, where one member ends could differ between this
# reader and the engine's, and bytes could escape the digest. pack_context writes none of them.
# headers that describe the member after them (GNU long name and long link name): part of its header
EXTENSION_TYPES = frozenset({tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK})
# members whose size bytes of data follow the header
DATA_TYPES = frozenset({tarfile.REGTYPE})
# members with no data, whatever their size field says (as Python's and Go's tar readers treat them)
HEADER_ONLY_TYPES = frozenset({tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE})


def header_bytes(info: tarfile.TarInfo) -> bytes:
    """The header blocks ``dockyard.tasks.context.pack.pack_context`` writes for ``info``."""
    return info.tobuf(tarfile.GNU_FORMAT, tarfile.ENCODING, "surrogateescape")


class MemberDigest:
    """The context digest, fed one member record at a time, in archive order."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256(DOMAIN)

    def add(self, record: bytes) -> None:
        """One member's record: the sha256 of its header, then the sha256 of its content (64 bytes)."""
        self._hash.update(record)

    def hexdigest(self) -> str:
        return "sha256:" + self._hash.hexdigest()


class ArchiveDigest:
    """The context digest of a tar, fed its bytes in pieces of any size (bounded memory)."""

    def __init__(self) -> None:
        self._digest = MemberDigest()
        self._block = bytearray()  # a header or extension block being gathered
        self._header = hashlib.sha256()  # raw header bytes of the member being read
        self._header_started = False
        self._extension_blocks = 0  # blocks of extension data still to come
        self._content: hashlib._Hash | None = None
        self._content_left = 0
        self._padding_left = 0
        self._zeros = 0  # bytes of zeros after the last member (the end marker and record padding)
        self._error: InvalidInput | None = None

    def update(self, data: bytes | bytearray | memoryview) -> None:
        """Feed the next bytes; a malformed archive is reported by ``hexdigest``, not here."""
        if self._error is None:
            try:
                self._update(data)
            except InvalidInput as exc:
                self._error = exc

    def _update(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        position, end = 0, len(view)
        while position < end:
            if self._zeros:
                rest = view[position:]
                if any(rest):
                    raise InvalidInput("Context archive has data after its end marker.")
                self._zeros += len(rest)
                return
            if self._content is not None:
                take = min(self._content_left, end - position)
                self._content.update(view[position:position + take])
                position += take
                self._content_left -= take
                if self._content_left == 0:
                    self._finish(self._content.digest())
                continue
            if self._padding_left:
                take = min(self._padding_left, end - position)
                position += take
                self._padding_left -= take
                continue
            take = min(BLOCK - len(self._block), end - position)
            self._block += view[position:position + take]
            position += take
            if len(self._block) == BLOCK:
                block = bytes(self._block)
                self._block.clear()
                self._take_block(block)

    def _take_block(self, block: bytes) -> None:
        if self._extension_blocks:
            self._extension_blocks -= 1
            self._header.update(block)
            return
        if block == ZERO_BLOCK:
            if self._header_started:
                raise InvalidInput("Context archive ends inside a member's header.")
            self._zeros = BLOCK
            return
        kind, size = _type_and_size(block)
        self._header.update(block)
        self._header_started = True
        if kind in EXTENSION_TYPES:
            self._extension_blocks = -(-size // BLOCK)
        elif kind in DATA_TYPES:
            self._padding_left = -size % BLOCK
            if size == 0:
                self._finish(EMPTY_SHA256)
            else:
                self._content, self._content_left = hashlib.sha256(), size
        elif kind in HEADER_ONLY_TYPES:
            self._finish(EMPTY_SHA256)
        else:
            raise InvalidInput(f"Context archive has a member of unsupported type {kind!r}.")

    def _finish(self, content_sha256: bytes) -> None:
        self._digest.add(self._header.digest() + content_sha256)
        self._header, self._header_started, self._content = hashlib.sha256(), False, None

    def hexdigest(self) -> str:
        """The digest; raises ``InvalidInput`` if the archive is malformed or truncated (no complete end marker)."""
        if self._error is not None:
            raise self._error
        if self._zeros < 2 * BLOCK or self._block or self._content is not None or self._padding_left:
            raise InvalidInput("Context archive is truncated: no end-of-archive marker.")
        return self._digest.hexdigest()

    def matches(self, digest: str) -> bool:
        """Whether the archive fed so far is complete, well formed and has context digest ``digest``."""
        try:
            return self.hexdigest() == digest
        except InvalidInput:
            return False


def _type_and_size(block: bytes) -> tuple[bytes, int]:
    """A header block's type flag and size field, its checksum verified (as ``tarfile.TarInfo.frombuf``)."""
    try:
        checksum = tarfile.nti(block[148:156])  # type: ignore[attr-defined]
        size = tarfile.nti(block[124:136])  # type: ignore[attr-defined]
    except tarfile.HeaderError as exc:
        raise InvalidInput(f"Context archive has an invalid header: {exc}.") from None
    if checksum not in tarfile.calc_chksums(block):  # type: ignore[attr-defined]
        raise InvalidInput("Context archive has an invalid header: bad checksum.")
    if size < 0:
        raise InvalidInput("Context archive has an invalid header: negative size.")
    return block[156:157], size


