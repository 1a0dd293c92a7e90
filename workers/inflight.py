"""A worker's in-flight messages, recorded under its host id, and the recovery of dead hosts.

Each message this worker receives is recorded (``dockyard.tasks.farm.recovery.received``,
from Celery's ``task_received``) until its task ends. A thread puts back
what dead hosts held, every heartbeat interval; at start, the worker first
puts back what its own previous run held when it was killed.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import redis
from celery.signals import task_received

from dockyard.config.settings import Settings, get_settings
from dockyard.tasks.farm import recovery
from dockyard.tasks.keyspace import redis_for

logger = logging.getLogger("dockyard.recovery")


@task_received.connect
def _record(request: Any = None, **_: Any) -> None:
    tag = getattr(getattr(request, "message", None), "delivery_tag", None)
    if tag and request is not None:
        settings = get_settings()
        retries = int((request.request_dict or {}).get("retries") or 0)
        try:
            recovery.received(redis_for(settings), settings, recovery.delivery(request.task_id, retries), str(tag))
        except redis.RedisError as exc:
            logger.warning("could not record delivery %s: %s", tag, exc)


def recover_own_previous_run(settings: Settings, app: Any) -> None:
    """Put back the messages this host id's worker of this lane held when it was killed."""
    try:
        with app.connection_for_write() as broker:
            recovery.recover_host(
                redis_for(settings), settings, broker.default_channel, settings.host_id, reroute=False,
                lanes=(recovery.own_lane(),),
            )
    except Exception as exc:  # noqa: BLE001 - Redis or the broker away: the visibility timeout still restores them
        logger.warning("could not restore the previous run's messages: %s", exc)


def recover_forever(settings: Settings, app: Any, stop: threading.Event) -> None:
    """Every heartbeat interval, put back what dead hosts held."""
    while not stop.is_set():
        try:
            with app.connection_for_write() as broker:
                while not stop.is_set():
                    recovery.recover_dead_hosts(redis_for(settings), settings, broker.default_channel)
                    stop.wait(settings.heartbeat_interval_s)
        except Exception as exc:  # noqa: BLE001 - Redis or the broker away: try again
            logger.warning("dead-host recovery failed, retrying: %s", exc)
            stop.wait(settings.heartbeat_interval_s)
