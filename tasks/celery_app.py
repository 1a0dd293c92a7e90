"""The Celery apps: the configured app with dockyard's router, for callers and (with the tasks) for workers."""

from __future__ import annotations

import functools
from collections.abc import Sequence

from celery import Celery

from dockyard.config.celery import celery_config
from dockyard.config.settings import Settings, get_settings
from dockyard.tasks.routing.router import route_task


def create_celery(settings: Settings, *, include: Sequence[str] = ()) -> Celery:
    """A Celery app for ``settings``; workers include ``dockyard.tasks.celery_tasks``, callers need nothing more."""
    app = Celery("dockyard", include=list(include))
    app.conf.update(celery_config(settings))
    app.conf.task_routes = (route_task,)
    if settings.signs_messages:
        # task messages must be signed; results and remote control stay JSON
        app.setup_security(allowed_serializers=["json"])
    return app


@functools.lru_cache(maxsize=1)
def caller_app() -> Celery:
    """The process's app for sending tasks by name and reading their results."""
    return create_celery(get_settings())
