"""A cap on redeliveries: a message that keeps killing its worker fails instead of looping.

A message whose worker died ``max_redeliveries`` times (it was delivered that
often and never finished) fails with ``RedeliveryLimit`` at its next delivery.
Key: ``deliveries:<task id>:<attempt>``, the count, dropped when the task ends.
A delivery that hands its build over to a new attempt (a takeover, see
``dockyard.tasks.celery_tasks.fresh_budget``) carries the deaths so far to that
attempt: a poison message cannot escape the cap through takeovers.
"""

from __future__ import annotations

import redis

from dockyard.config.settings import Settings
from dockyard.tasks.errors import RedeliveryLimit
from dockyard.tasks.keyspace import key


def count_delivery(connection: redis.Redis, settings: Settings, task_id: str, attempt: int) -> int:
    """Count one delivery of ``task_id``'s ``attempt``; raise past the cap. Returns the count."""
    counter = key(settings, "deliveries", task_id, str(attempt))
    pipe = connection.pipeline()
    pipe.incr(counter)
    pipe.expire(counter, settings.visibility_timeout_s * (settings.max_redeliveries + 2))
    count = int(pipe.execute()[0])
    if count > settings.max_redeliveries:
        raise RedeliveryLimit(
            f"task {task_id} was delivered {count} times; its worker died on each of the "
            f"first {count - 1} (limit DOCKYARD_MAX_REDELIVERIES={settings.max_redeliveries})"
        )
    return count


def forget_deliveries(connection: redis.Redis, settings: Settings, task_id: str, attempt: int) -> None:
    """Drop the counter once the task has finished, one way or another."""
    connection.delete(key(settings, "deliveries", task_id, str(attempt)))


def hand_over_deliveries(connection: redis.Redis, settings: Settings, task_id: str, attempt: int) -> None:
    """This delivery ended well, handing over to ``attempt + 1``: that attempt starts from the deaths so far."""
    counter = key(settings, "deliveries", task_id, str(attempt))
    deaths = int(connection.get(counter) or 1) - 1  # every delivery counted but this one died
    pipe = connection.pipeline()
    if deaths > 0:
        pipe.set(key(settings, "deliveries", task_id, str(attempt + 1)), deaths,
                 ex=settings.visibility_timeout_s * (settings.max_redeliveries + 2))
    pipe.delete(counter)
    pipe.execute()
