"""The Celery tasks: thin wrappers that unpack JSON, call the operation, map errors.

Names are stable (``dockyard.build_docker_image``, ``dockyard.push_docker_image``)
so any program can send them by name without importing this code.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Mapping
from typing import Any

from celery import Task, shared_task

from config.settings import get_settings
from tasks.build import build_docker_image, build_image
from tasks.deliveries import count_delivery, forget_deliveries
from tasks.errors import InvalidInput, TransientError
from tasks.push import push_image
from tasks.routing import BUILD_TASK, PUSH_TASK
from tasks.secrets import is_sealed, unseal
from tasks.store import redis_for

logger = logging.getLogger("dockyard.tasks")
_BUILD_PARAMS = inspect.signature(build_docker_image)
_RETRY = {
    "autoretry_for": (TransientError,),
    "max_retries": get_settings().transient_retries,
    "retry_backoff": get_settings().transient_backoff_s,
    "retry_backoff_max": 300,
    "retry_jitter": False,
}


class OutputToLog:
    """Build output sink on a worker: whole lines to the task's log."""

    def __init__(self, task_id: str | None) -> None:
        self.task_id = task_id
        self._partial = ""

    def __call__(self, text: str) -> None:
        self._partial += text
        *lines, self._partial = self._partial.split("\n")
        for line in lines:
            if line.strip():
                logger.info("[%s] %s", self.task_id, line.rstrip())


class DockyardTask(Task):  # type: ignore[misc]
    """Counts each delivery and fails a message redelivered past the cap."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        settings = get_settings()
        connection = redis_for(settings)
        task_id = self.request.id
        if task_id:
            count_delivery(connection, settings, task_id, self.request.retries)
        try:
            return super().__call__(*args, **kwargs)
        finally:
            if task_id:
                forget_deliveries(connection, settings, task_id, self.request.retries)


@shared_task(name=BUILD_TASK, bind=True, base=DockyardTask, **_RETRY)
def build_task(self: Task, **params: Any) -> dict[str, Any]:
    """Build with prefect-docker's keyword arguments; the result also names the ``host``."""
    try:
        bound = _BUILD_PARAMS.bind(**params)
    except TypeError as exc:
        raise InvalidInput(f"Bad build arguments: {exc}") from exc
    args = dict(bound.arguments)
    build_kwargs = args.pop("build_kwargs", {})
    args.pop("ignore_cache", None)
    settings = get_settings()
    started = time.monotonic()
    result = build_image(
        **args, build_kwargs=build_kwargs, settings=settings,
        output=OutputToLog(self.request.id),
    )
    return {**result, "host": settings.host_id, "duration_s": round(time.monotonic() - started, 3)}


@shared_task(name=PUSH_TASK, bind=True, base=DockyardTask, **_RETRY)
def push_task(
    self: Task,
    build_result: Mapping[str, Any] | None = None,
    *,
    image_name: str | None = None,
    tag: str | None = None,
    credentials: Mapping[str, Any] | None = None,
    additional_tags: list[str] | None = None,
    ignore_cache: bool = False,
    build_backend: str = "docker-py",
) -> dict[str, Any]:
    """Push; in a chain, name, tag and additional tags come from the build's result."""
    del ignore_cache
    if build_result is not None:
        if not isinstance(build_result, Mapping):
            raise InvalidInput("build_result must be the dict a build returned.")
        image_name = image_name or build_result.get("image_name")
        tag = tag or build_result.get("tag")
        if additional_tags is None:
            additional_tags = build_result.get("additional_tags")
    if not image_name:
        raise InvalidInput("push needs image_name, or a build result to take it from.")
    settings = get_settings()
    if credentials is not None and is_sealed(credentials):
        credentials = unseal(credentials, settings.secret_key)
    started = time.monotonic()
    result = push_image(
        image_name, tag=tag, credentials=credentials, additional_tags=additional_tags,
        build_backend=build_backend, settings=settings, output=OutputToLog(self.request.id),
    )
    return {**result, "host": settings.host_id, "duration_s": round(time.monotonic() - started, 3)}
