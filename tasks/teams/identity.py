"""Which team a task runs for: the team of the queue its message was taken from (``transport``), never a field.

A worker task's settings are the worker's with ``team`` set to that team
(``task_settings``), so every key, queue and check below it is the team's.
Outside a task (a caller) the team is the caller's own ``DOCKYARD_TEAM``.
"""

from __future__ import annotations

from typing import Any

from celery._state import get_current_worker_task

from dockyard.config.settings import Settings, queue_team
from dockyard.config.teams import Team
from dockyard.tasks.errors import InvalidInput


def request_team(request: Any) -> str | None:
    """The team of the queue a received task came from (its stamped routing key), or None."""
    info = getattr(request, "delivery_info", None) or {}
    return queue_team(info.get("routing_key") if isinstance(info, dict) else None)


def current_team() -> str | None:
    """The team of the task this worker thread runs now, or None outside a task."""
    try:
        task = get_current_worker_task()
    except RuntimeError:  # the interpreter is finalizing (an AsyncResult's __del__): no task runs
        return None
    return request_team(task.request) if task is not None else None


def verified_team(request: Any, settings: Settings) -> Team:
    """The declared team a task's message came from; ``InvalidInput`` for a queue of no declared team."""
    name = request_team(request)
    team = settings.team_named(name)
    if team is None:
        queue = (getattr(request, "delivery_info", None) or {}).get("routing_key")
        raise InvalidInput(
            f"The message came from queue {queue!r}, which belongs to no team declared on this farm "
            f"(declared: {', '.join(settings.declared_teams.names)})."
        )
    return team


_COPIES: dict[tuple[int, str], tuple[Settings, Settings]] = {}  # (id of settings, team) -> (settings, its copy)
_MAX_COPIES = 256


def for_team(settings: Settings, team: str) -> Settings:
    """``settings`` with ``team`` as its team (one copy per settings object and team)."""
    if settings.team == team:
        return settings
    found = _COPIES.get((id(settings), team))
    if found is not None and found[0] is settings:
        return found[1]
    if len(_COPIES) >= _MAX_COPIES:
        _COPIES.clear()
    copy = settings.model_copy(update={"team": team})
    _COPIES[(id(settings), team)] = (settings, copy)
    return copy


def task_settings(request: Any, settings: Settings) -> Settings:
    """The settings a task runs with: the worker's, for the verified team of its message."""
    return for_team(settings, verified_team(request, settings).name)


def sending_settings(settings: Settings) -> Settings:
    """The settings a message is routed with: inside a task, for the task's team; else the caller's."""
    team = current_team()
    return for_team(settings, team) if team is not None else settings
