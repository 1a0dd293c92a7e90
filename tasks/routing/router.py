"""Where a task message goes: pushes and tags to the host that holds the image."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dockyard.config.settings import host_queue

BUILD_TASK = "dockyard.build_docker_image"
PUSH_TASK = "dockyard.push_docker_image"
TAG_TASK = "dockyard.tag_image"
PING_TASK = "dockyard.ping"


def route_task(
    name: str,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    options: Mapping[str, Any],
    task: Any = None,
    **extra: Any,
) -> dict[str, str] | None:
    """Celery router: cheap work to its holder's fast lane; a push follows the image to its host's
    queue, a build goes where its lineage's layers are (``dockyard.tasks.routing.placement``); the rest takes the default."""
    from dockyard.tasks.routing.fast_lane import fast_lane_queue

    if (fast := fast_lane_queue(name, args, kwargs)) is not None:
        return {"queue": fast}
    if name == BUILD_TASK:
        from dockyard.tasks.routing.placement import placement_queue

        queue = placement_queue(args, kwargs)
        return {"queue": queue} if queue else None
    if name != PUSH_TASK:
        return None
    host = holding_host(args, kwargs) or _indexed_host(kwargs)
    return {"queue": host_queue(host)} if host else None


def _indexed_host(kwargs: Mapping[str, Any]) -> str | None:
    """For a push sent on its own: the live host that holds ``image_name:tag``, from Redis."""
    from dockyard.config.settings import get_settings
    from dockyard.tasks.farm.hosts import is_alive, locate_images
    from dockyard.tasks.request.naming import qualify_image_name
    from dockyard.tasks.keyspace import redis_for

    image_name, tag = kwargs.get("image_name"), kwargs.get("tag") or "latest"
    if not isinstance(image_name, str) or not isinstance(tag, str):
        return None
    settings = get_settings()
    try:
        reference = f"{qualify_image_name(image_name, settings.default_namespace)}:{tag}"
    except ValueError:
        return None  # the task itself reports the bad name
    connection = redis_for(settings)
    location = locate_images(connection, settings, [reference])[0]
    if location and is_alive(connection, settings, location["host"]):
        return str(location["host"])
    return None


def holding_host(args: Sequence[Any], kwargs: Mapping[str, Any]) -> str | None:
    """The host named by a build result given to a push (in a chain, the first argument)."""
    build_result = args[0] if args else kwargs.get("build_result")
    if isinstance(build_result, Mapping) and isinstance(build_result.get("host"), str):
        return str(build_result["host"])
    return None
