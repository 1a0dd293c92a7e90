"""Cache keys: a sha256 over a canonical JSON form of what changes the result."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from dockyard.tasks.errors import InvalidInput

NEVER_IN_KEY = frozenset({"credentials", "ignore_cache"})
# build_kwargs that change how a build is run or logged, not the image it makes
BUILD_KWARGS_NOT_IN_KEY = frozenset(
    {"path", "quiet", "rm", "forcerm", "decode", "timeout", "stream", "use_config_proxy"}
)


def canonical(value: Any) -> bytes:
    """Canonical JSON bytes: sorted keys, no spaces; refuses what JSON cannot say."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"Arguments must be JSON-serialisable to be cached: {exc}") from exc


def digest_of(value: Any) -> str:
    return hashlib.sha256(canonical(value)).hexdigest()


def call_key(operation: str, args: list[Any], kwargs: Mapping[str, Any], content: Mapping[str, Any] | None = None) -> str:
    """Key of a call: operation, arguments (never credentials nor ignore_cache), content digests."""
    kept = {name: value for name, value in kwargs.items() if name not in NEVER_IN_KEY}
    return digest_of({"op": operation, "args": args, "kwargs": kept, "content": dict(content or {})})


def build_key(
    *,
    context_digest: str,
    dockerfile_digest: str,
    build_backend: str,
    build_kwargs: Mapping[str, Any],
) -> str:
    """Key of a build: content only. The image name and tags are not in it."""
    options = {name: value for name, value in build_kwargs.items() if name not in BUILD_KWARGS_NOT_IN_KEY}
    return digest_of(
        {
            "op": "build",
            "context": context_digest,
            "dockerfile": dockerfile_digest,
            "backend": build_backend,
            "options": options,
        }
    )


def push_key(*, image_id: str, repository: str, tags: list[str], registry: str | None) -> str:
    """Key of a push: the image, where it goes and under which tags."""
    return digest_of({"op": "push", "image_id": image_id, "repository": repository, "tags": tags, "registry": registry})
