"""The worker's hook of the disk budget (``dockyard.tasks.farm.disk_budget``): one thread per worker runs the passes.

A pool process that ran a build, tag or push asks for a pass (``disk-due:<host>``,
from Celery's ``task_postrun``, after the task's result is stored); the
thread in the worker's main process takes that request within a heartbeat
interval, and runs a pass every ``disk_check_interval_s`` anyway. Passes run
off the tasks' path, in one process (which remembers the layers it read).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import docker
import redis
from celery.signals import task_postrun

from dockyard.config.settings import Settings, get_settings
from dockyard.tasks.farm.disk_budget import enforce
from dockyard.tasks.engine.connection import open_client
from dockyard.tasks.keyspace import key, redis_for
from dockyard.tasks.task_names import BUILD_TASK, PUSH_TASK, TAG_TASK

logger = logging.getLogger("dockyard.disk_budget")
CHECKED_TASKS = (BUILD_TASK, TAG_TASK, PUSH_TASK)  # each may have built an image


def due_key(settings: Settings) -> str:
    return key(settings, "disk-due", settings.host_id)


@task_postrun.connect
def _ask_for_a_pass(sender: Any = None, **_: Any) -> None:
    if getattr(sender, "name", None) not in CHECKED_TASKS:
        return
    settings = get_settings()
    try:
        redis_for(settings).set(due_key(settings), "1", ex=max(1, int(settings.disk_check_interval_s)))
    except redis.RedisError as exc:
        logger.warning("could not ask for a disk budget pass: %s", exc)


def guard_forever(settings: Settings, stop: threading.Event) -> None:
    """Run a pass when one is asked for (looked at every heartbeat interval) or every check interval."""
    connection = redis_for(settings)
    next_pass = 0.0
    client: docker.DockerClient | None = None
    try:
        while not stop.is_set():
            try:
                asked = bool(connection.delete(due_key(settings)))
                if asked or time.monotonic() >= next_pass:
                    client = client or open_client(settings)
                    enforce(connection, settings, client)
                    next_pass = time.monotonic() + settings.disk_check_interval_s
            except Exception as exc:  # noqa: BLE001 - Redis or the engine away: the next pass tries again
                logger.warning("disk budget pass of %s failed: %s", settings.host_id, exc)
                _close(client)  # the next pass opens a new one; this one's connections are let go
                client = None
            stop.wait(settings.heartbeat_interval_s)
    finally:
        _close(client)


def _close(client: docker.DockerClient | None) -> None:
    """Close ``client`` (its connection pool) if there is one; a failure to close is only logged."""
    if client is not None:
        try:
            client.close()
        except Exception as exc:  # noqa: BLE001 - a client whose engine went away may fail to close: it is dropped anyway
            logger.debug("closing the disk budget's Docker client failed: %s", exc)


def start(settings: Settings, stop: threading.Event) -> None:
    """Start the disk budget's thread (a daemon, stopped with the heartbeat)."""
    threading.Thread(target=guard_forever, args=(settings, stop), name="disk-budget", daemon=True).start()
