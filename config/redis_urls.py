"""Redis URLs: plain (``redis://``, ``rediss://``, ``unix://``) or Sentinel (``sentinel://``).

A Sentinel URL lists the sentinels, separated by ``;``, as Celery and kombu
read it: ``sentinel://USER:PASSWORD@HOST1:PORT1/DB;sentinel://HOST2:PORT2;...``.
The first part's user, password and database are the master's (the
sentinels' own password is ``sentinel_password``, the master's name
``sentinel_master``). Every sentinel's port must be given: Celery and kombu
would take Redis' 6379 for a missing one.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

SENTINEL_SCHEME = "sentinel"
SEPARATOR = ";"


@dataclass(frozen=True)
class SentinelTarget:
    """What a ``sentinel://`` URL names: the sentinels, and the master's database and credentials."""

    sentinels: tuple[tuple[str, int], ...]
    db: int
    username: str | None
    password: str | None


def is_sentinel_url(url: str) -> bool:
    """True for a ``sentinel://`` URL (one or more sentinels)."""
    return url.strip().lower().startswith(SENTINEL_SCHEME + "://")


def parse_sentinel_url(url: str) -> SentinelTarget:
    """The sentinels and the master's database, user and password; ``ValueError`` if malformed."""
    chunks = [chunk.strip() for chunk in url.split(SEPARATOR) if chunk.strip()]
    if not chunks:
        raise ValueError("a sentinel URL names at least one sentinel")
    sentinels: list[tuple[str, int]] = []
    for chunk in chunks:
        parts = urlsplit(chunk)
        if parts.scheme.lower() != SENTINEL_SCHEME:
            raise ValueError(f"every part of a sentinel URL must be sentinel://HOST:PORT, got {parts.scheme}://")
        try:
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"bad sentinel port in a sentinel URL: {exc}") from None
        if not parts.hostname or not port:
            raise ValueError("every part of a sentinel URL names its sentinel's host and port")
        sentinels.append((parts.hostname, port))
    first = urlsplit(chunks[0])
    return SentinelTarget(tuple(sentinels), _db(first.path), _unquoted(first.username), _unquoted(first.password))


def _db(path: str) -> int:
    number = path.strip("/") or "0"
    if not number.isdigit():
        raise ValueError(f"the database of a sentinel URL must be a number, got {number!r}")
    return int(number)


def _unquoted(value: str | None) -> str | None:
    return unquote(value) if value else None
