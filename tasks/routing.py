"""Where a task message goes: pushes and tags to the host that holds the image."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from config.settings import host_queue

BUILD_TASK = "dockyard.build_docker_image"
PUSH_TASK = "dockyard.push_docker_image"


def route_task(
    name: str,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    options: Mapping[str, Any],
    task: Any = None,
    **extra: Any,
) -> dict[str, str] | None:
    """Celery router: a push follows the image to its host's queue; the rest takes the default."""
    if name != PUSH_TASK:
        return None
    host = holding_host(args, kwargs)
    return {"queue": host_queue(host)} if host else None


def holding_host(args: Sequence[Any], kwargs: Mapping[str, Any]) -> str | None:
    """The host named by a build result given to a push (in a chain, the first argument)."""
    build_result = args[0] if args else kwargs.get("build_result")
    if isinstance(build_result, Mapping) and isinstance(build_result.get("host"), str):
        return str(build_result["host"])
    return None
