"""Celery's router: where each task message goes.

Cheap work goes to its holder's fast lane (``fast_lane``); a push follows
its image to the host that holds it; a build goes where its lineage's
layers are (``placement``); everything else takes the default queue.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import redis

from dockyard.config.settings import host_queue, team_queue
from dockyard.tasks.farm.hosts import is_alive, locate_images
from dockyard.tasks.request.chain import holding_host
from dockyard.tasks.request.naming import qualify_image_name
from dockyard.tasks.routing.fast_lane import fast_lane_queue
from dockyard.tasks.routing.lookup import routing_farm, routing_settings
from dockyard.tasks.teams.identity import current_team
from dockyard.tasks.routing.placement import placement_queue
from dockyard.tasks.task_names import BUILD_TASK, PUSH_TASK

logger = logging.getLogger("dockyard.router")


def route_task(
    name: str,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    options: Mapping[str, Any],
    task: Any = None,
    **extra: Any,
) -> dict[str, str] | None:
    """Celery router: the queue of one task message, always one of the sending team's
    (``<queue>@<team>``: a team's Redis user may push to no other). None: the app's default queue,
    which is its team's shared queue (``dockyard.config.celery``); inside a worker task, the
    task's team's shared queue."""
    if options.get("queue"):
        return None  # sent to a queue it names (a retry, a hand-over, a released parked build): no placement to undo
    settings = routing_settings()
    queue = farm_route(name, args, kwargs)
    if queue is not None:
        return {"queue": team_queue(queue, settings.team)}
    team = current_team()
    return {"queue": team_queue(settings.build_queue, team)} if team is not None else None


def farm_route(name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> str | None:
    """The farm's queue of one task message (before its team), or None for the shared queue."""
    if (fast := fast_lane_queue(name, args, kwargs)) is not None:
        return fast
    if name == BUILD_TASK:
        return placement_queue(args, kwargs)
    if name != PUSH_TASK:
        return None
    host = holding_host(args, kwargs) or _indexed_host(kwargs)
    return host_queue(host) if host else None


def _indexed_host(kwargs: Mapping[str, Any]) -> str | None:
    """For a push sent on its own: the live host that holds ``image_name:tag``, from Redis.

    Redis away: None (the default queue, whose worker finds or forwards the image), with a warning,
    as placement sends a build to the shared queue; never an error at send time.
    """
    image_name, tag = kwargs.get("image_name"), kwargs.get("tag") or "latest"
    if not isinstance(image_name, str) or not isinstance(tag, str):
        return None
    try:
        settings, connection = routing_farm()
        try:
            reference = f"{qualify_image_name(image_name, settings.default_namespace)}:{tag}"
        except ValueError:
            return None  # the task itself reports the bad name
        location = locate_images(connection, settings, [reference])[0]
        if location and is_alive(connection, settings, location["host"]):
            return str(location["host"])
    except redis.RedisError as exc:
        logger.warning("routing of the push of %s:%s failed, sending it to the default queue: %s", image_name, tag, exc)
    return None
