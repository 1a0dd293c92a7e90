"""Celery's Redis result backend with each team's results under its own name.

A result's key (and its pub/sub channel) is ``celery-task-meta-<team>.<id>``:
a team's Redis user may read and subscribe to its own only. A worker stores
a result under the team of the message it ran (``identity.request_team``);
a caller reads under its own ``DOCKYARD_TEAM``. A result of no team (a
message from no team's queue) stays under Celery's plain key, which no team reads.
"""

from __future__ import annotations

import contextvars
from typing import Any

from celery.backends.redis import RedisBackend, SentinelBackend
from celery.signals import worker_init

from dockyard.config.settings import get_settings
from dockyard.tasks.teams.identity import current_team, request_team

_STORING_FOR: contextvars.ContextVar[str | None] = contextvars.ContextVar("dockyard_result_team", default=None)
_in_worker = {"on": False}  # set when this process starts a Celery worker: its results name the message's team


def _worker_started(**_: Any) -> None:
    _in_worker["on"] = True


worker_init.connect(_worker_started, weak=False)
TEAM_CONF = "dockyard_team"  # a caller app's team (the settings it was made from)
TEAM_ID_SEPARATOR = "."  # celery-task-meta-<team>.<id>: team names hold no "."


class _TeamKeys:
    """Mixin: results keyed by team."""

    task_keyprefix: Any
    app: Any

    def _team(self) -> str | None:
        """A caller's own team; in a worker, the team of the message being stored or run (outside
        any task, none: its results are of no team)."""
        if not _in_worker["on"]:
            return str(self.app.conf.get(TEAM_CONF) or get_settings().team)
        return _STORING_FOR.get() or current_team()

    def get_key_for_task(self, task_id: str, key: str = "") -> Any:
        if not task_id:
            raise ValueError(f"task_id must not be empty. Got {task_id} instead.")
        team = self._team()
        named = f"{team}{TEAM_ID_SEPARATOR}{task_id}" if team else task_id
        return self._get_key_for(self.task_keyprefix, named, key)  # type: ignore[attr-defined]

    def store_result(self, task_id: str, result: Any, state: str, traceback: Any = None, request: Any = None, **kwargs: Any) -> Any:
        token = _STORING_FOR.set(request_team(request) if request is not None else None)
        try:
            return super().store_result(task_id, result, state, traceback=traceback, request=request, **kwargs)  # type: ignore[misc]
        finally:
            _STORING_FOR.reset(token)


class TeamRedisBackend(_TeamKeys, RedisBackend):  # type: ignore[misc]
    """``redis://`` results, keyed by team."""


class TeamSentinelBackend(_TeamKeys, SentinelBackend):  # type: ignore[misc]
    """``sentinel://`` results, keyed by team."""


def backend_url(url: str) -> str:
    """Celery's ``result_backend`` for ``url``: this module's backend class, then the URL."""
    name = "TeamSentinelBackend" if url.startswith("sentinel://") else "TeamRedisBackend"
    return f"{__name__}:{name}+{url}"
