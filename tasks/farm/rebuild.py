"""The build behind an image, kept so an image lost with its host can be built again.

Keys (written by the holder's worker, expiring with the cache):
``spec:<cache key>`` (the validated spec) and ``built-by:<image id>`` (its
cache key). A push whose image existed only on a dead host finds the spec
here and rebuilds it by the same key on a live host before pushing.
"""

from __future__ import annotations

import redis

from dockyard.config.settings import Settings
from dockyard.tasks.errors import InvalidInput
from dockyard.tasks.keyspace import key
from dockyard.tasks.request.spec import BuildSpec


def remember(connection: redis.Redis, settings: Settings, spec: BuildSpec, cache_key: str, image_id: str) -> None:
    """``image_id`` was built from ``spec`` under ``cache_key``."""
    pipe = connection.pipeline(transaction=False)
    pipe.set(key(settings, "spec", cache_key), spec.model_dump_json(), ex=settings.cache_ttl_s)
    pipe.set(key(settings, "built-by", image_id), cache_key, ex=settings.cache_ttl_s)
    pipe.execute()


def recall(connection: redis.Redis, settings: Settings, image_id: str) -> BuildSpec | None:
    """The spec ``image_id`` was built from, validated again; None if it is not known."""
    cache_key = connection.get(key(settings, "built-by", image_id))
    if isinstance(cache_key, bytes):
        cache_key = cache_key.decode()
    raw = connection.get(key(settings, "spec", cache_key)) if cache_key else None
    if raw is None:
        return None
    try:
        return BuildSpec.parse(BuildSpec.model_validate_json(raw).model_dump())
    except (InvalidInput, ValueError):
        return None
