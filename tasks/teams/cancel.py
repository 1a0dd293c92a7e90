"""Cancel requests: a team asks a task of its own to stop, in its own namespace, where no other team writes.

Key (the team's namespace, ``dockyard.tasks.teams.keys``):

- ``team:<team>:cancel:<task id>``: the request, the time it was made, for ``CANCEL_TTL_S``.

The caller writes it (its team's Redis user may write ``team:<team>:cancel:*``
and nothing of another team's, ``dockyard.workers.redis_acl``); the worker
reads it under the team of the queue the task came from
(``dockyard.tasks.teams.identity``), so a team can only ever cancel its own
tasks. A worker looks before it runs a task (a queued build answers
``Cancelled`` without building) and, while a build runs, every
``CANCEL_POLL_S`` (``dockyard.tasks.worker.cancel_watch``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable

import redis

from dockyard.config.settings import Settings
from dockyard.tasks.errors import Cancelled, InvalidInput
from dockyard.tasks.teams.keys import team_key

CANCEL_TTL_S = 24 * 3600  # how long a cancel request is kept: longer than a task waits in a queue or runs
CANCEL_POLL_S = 0.5  # how often a running build looks at its cancel key (one EXISTS each time)
TASK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,199}")  # Celery's ids (uuids), and nothing that could end a key


def cancel_key(settings: Settings, task_id: str) -> str:
    """The cancel key of ``task_id`` in ``settings.team``'s namespace."""
    if not isinstance(task_id, str) or not TASK_ID.fullmatch(task_id):
        raise InvalidInput(f"Not a task id: {task_id!r}.")
    return team_key(settings, "cancel", task_id)


def request_cancel(connection: redis.Redis, settings: Settings, task_id: str) -> None:
    """Ask the farm to cancel ``task_id``, a task of ``settings.team``'s (a caller's own connection)."""
    name = cancel_key(settings, task_id)  # a bad id is refused before Redis is asked
    connection.set(name, f"{time.time():.3f}", ex=CANCEL_TTL_S)


def _cancellable(task_id: object) -> bool:
    """An id a cancel request can name (any other task, a hand-made message's odd id, was never cancelled)."""
    return isinstance(task_id, str) and bool(TASK_ID.fullmatch(task_id))


def is_cancelled(connection: redis.Redis, settings: Settings, task_id: str | None) -> bool:
    """Whether ``settings.team`` asked to cancel ``task_id`` (False without one a request can name)."""
    return _cancellable(task_id) and bool(connection.exists(cancel_key(settings, str(task_id))))


def first_cancelled(connection: redis.Redis, settings: Settings, task_ids: Iterable[str]) -> str | None:
    """The first of ``task_ids`` (copies of one call) that ``settings.team`` asked to cancel, or None
    (one round trip)."""
    ids = sorted(task_id for task_id in task_ids if _cancellable(task_id))
    if not ids:
        return None
    pipe = connection.pipeline(transaction=False)
    for task_id in ids:
        pipe.exists(cancel_key(settings, task_id))
    return next((task_id for task_id, found in zip(ids, pipe.execute()) if found), None)


def cancelled_error(task_id: str, doing: str) -> Cancelled:
    """The error of a cancelled task, saying what it was doing when it stopped."""
    return Cancelled(f"Task {task_id} was cancelled by its team ({doing}).")


def check(connection: redis.Redis, settings: Settings, task_id: str | None, *, doing: str) -> None:
    """Raise ``Cancelled`` if ``settings.team`` asked to cancel ``task_id``."""
    if task_id is not None and is_cancelled(connection, settings, task_id):
        raise cancelled_error(task_id, doing)
