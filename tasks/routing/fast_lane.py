"""Routing of cheap work to a host's fast lane: its own queue, served by a small pool of its own.

Cheap work never waits behind builds. It is a build request whose key is
already cached on a live host (answered as a hit, its tags applied if
missing), a forwarded tag task, and a push the push cache will answer. Each
goes to the holder's fast queue (``<host queue>.fast``), provided the holder
advertises a fast lane in its host record (``fast_queue``, see
``dockyard.workers.heartbeat``). Routing asks Redis only (a few reads, no registry,
no engine): a build that pulls its bases is looked up under the build key
last answered for its content (``keyof:<content key>``, written by the
holder); the fast worker checks again with the bases' digests now and hands
what is not cheap to the build lanes (``dockyard.tasks.worker.fast_answer``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import redis

from dockyard.config.settings import Settings
from dockyard.tasks.farm import hosts
from dockyard.tasks.registry.base_images import pulls
from dockyard.tasks.cache.single_flight import Entry, build_cache, push_cache
from dockyard.tasks.request.cache_key import push_key
from dockyard.tasks.errors import InvalidInput
from dockyard.tasks.keyspace import key, optional_text
from dockyard.tasks.routing.lookup import routing_farm
from dockyard.tasks.request.naming import qualify_image_name, registry_of
from dockyard.tasks.request.arguments import push_request
from dockyard.tasks.request.chain import holding_host, message_push_arguments
from dockyard.tasks.task_names import BUILD_TASK, PUSH_TASK, TAG_TASK
from dockyard.tasks.request.spec import BuildSpec

logger = logging.getLogger("dockyard.fast_lane")


def content_index_key(settings: Settings, content_key: str) -> str:
    """``keyof:<content key>``: the build key (content plus bases' digests) last answered for that content."""
    return key(settings, "keyof", content_key)


def remember_key(connection: redis.Redis, settings: Settings, spec: BuildSpec, cache_key: str) -> None:
    """Index ``cache_key`` under the spec's content key, for routing without asking the registry."""
    if cache_key != spec.key:
        connection.set(content_index_key(settings, spec.key), cache_key, ex=settings.cache_ttl_s)


def fast_queue_of(connection: redis.Redis, settings: Settings, host: str) -> str | None:
    """The fast queue ``host`` advertises, if it is alive and runs a fast lane."""
    raw = connection.get(hosts.host_key(settings, host))
    if not raw:
        return None
    queue = json.loads(raw).get("fast_queue")
    return str(queue) if isinstance(queue, str) and queue else None


def fast_lane_queue(name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> str | None:
    """Router: the holder's fast queue for a cached build or push; None for everything else.

    Never raises: a routing doubt sends the task the usual way.
    """
    if name not in (BUILD_TASK, PUSH_TASK):
        return None
    try:
        settings, connection = routing_farm()
        if name == BUILD_TASK:
            return _cached_build_queue(connection, settings, args, kwargs)
        return _cached_push_queue(connection, settings, args, kwargs)
    except (redis.RedisError, InvalidInput, ValueError, TypeError, KeyError) as exc:
        logger.debug("fast lane routing of %s skipped: %s", name, exc)
        return None


def forward_queue(name: str, host: str, kwargs: Mapping[str, Any]) -> str | None:
    """Where a task forwarded to ``host`` goes when it is cheap: a tag task always, a push when cached."""
    try:
        settings, connection = routing_farm()
        if name == TAG_TASK:
            return fast_queue_of(connection, settings, host)
        if name == PUSH_TASK and _push_is_cached(connection, settings, (), kwargs):
            return fast_queue_of(connection, settings, host)
    except (redis.RedisError, InvalidInput, ValueError, TypeError, KeyError) as exc:
        logger.debug("fast lane forward of %s skipped: %s", name, exc)
    return None


def probable_cache_key(connection: redis.Redis, settings: Settings, spec: BuildSpec) -> str | None:
    """The key ``spec`` is most likely cached under, from Redis alone."""
    if not pulls(spec) or not spec.base_images:
        return spec.key
    raw = connection.get(content_index_key(settings, spec.key))
    return optional_text(raw)


def _cached_build_queue(
    connection: redis.Redis, settings: Settings, args: Sequence[Any], kwargs: Mapping[str, Any]
) -> str | None:
    sent = kwargs.get("spec")
    if args or not isinstance(sent, Mapping) or set(kwargs) != {"spec"}:
        return None  # raw arguments: only a worker can read their context
    spec = BuildSpec.parse(sent)
    if spec.ignore_cache:
        return None
    cache_key = probable_cache_key(connection, settings, spec)
    if cache_key is None:
        return None
    raw = connection.get(build_cache(connection, settings).entry_key(cache_key))
    if not raw:
        return None
    return fast_queue_of(connection, settings, Entry.from_json(raw).host)


def _cached_push_queue(
    connection: redis.Redis, settings: Settings, args: Sequence[Any], kwargs: Mapping[str, Any]
) -> str | None:
    host = holding_host(args, kwargs)
    if not _push_is_cached(connection, settings, args, kwargs):
        return None
    if host is None:
        host = _located_host(connection, settings, args, kwargs)
    return fast_queue_of(connection, settings, host) if host else None


def _push_is_cached(connection: redis.Redis, settings: Settings, args: Sequence[Any], kwargs: Mapping[str, Any]) -> bool:
    """The push cache holds an entry for this push (the fast worker still asks the registry)."""
    if kwargs.get("ignore_cache"):
        return False
    merged = message_push_arguments(args, kwargs)
    if not isinstance(merged.get("image_id"), str):
        return False
    request = push_request(
        merged["image_name"], settings=settings, tag=merged.get("tag"), additional_tags=merged.get("additional_tags"),
        image_id=merged["image_id"],
    )
    assert request.image_id is not None
    cache_key = push_key(
        image_id=request.image_id, repository=request.image_name, tags=request.tags,
        registry=registry_of(request.image_name),
    )
    return bool(connection.exists(push_cache(connection, settings).entry_key(cache_key)))


def _located_host(connection: redis.Redis, settings: Settings, args: Sequence[Any], kwargs: Mapping[str, Any]) -> str | None:
    merged = message_push_arguments(args, kwargs)
    reference = f"{qualify_image_name(str(merged['image_name']), settings.default_namespace)}:{merged.get('tag') or 'latest'}"
    location = hosts.locate_images(connection, settings, [reference])[0]
    if location and location.get("image_id") == merged.get("image_id"):
        return str(location["host"])
    return None
