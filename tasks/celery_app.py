"""The Celery apps: the configured app with dockyard's router, for callers and (with the tasks) for workers."""

from __future__ import annotations

import functools
from collections.abc import Sequence

from celery import Celery

from dockyard.config.celery import celery_config
from dockyard.config.settings import Settings, get_settings
from dockyard.tasks.routing.router import route_task
from dockyard.tasks.teams.results import TEAM_CONF, backend_url
from dockyard.tasks.teams.share_cycle import queue_order_strategy
from dockyard.tasks.teams.transport import transport_for


def create_celery(settings: Settings, *, include: Sequence[str] = (), worker: bool = False) -> Celery:
    """A Celery app for ``settings``; workers include ``dockyard.tasks.celery_tasks``, callers need nothing more.

    Results are keyed by team (``dockyard.tasks.teams.results``); a worker's transport stamps each
    message with the queue it came from (``dockyard.tasks.teams.transport``), which names its team.
    """
    app = Celery("dockyard", include=list(include))
    app.conf.update(celery_config(settings))
    app.conf.result_backend = backend_url(settings.effective_result_backend)
    app.conf[TEAM_CONF] = settings.team
    if worker:
        app.conf.broker_transport = transport_for(settings.effective_broker_url)
        # the order it polls its teams' queues in: weighted by share, or fixed (dockyard.tasks.teams.share_cycle)
        app.conf.broker_transport_options = {
            **app.conf.broker_transport_options, "queue_order_strategy": queue_order_strategy(settings),
        }
    app.conf.task_routes = (route_task,)
    if settings.signs_messages:
        # task messages must be signed; results and remote control stay JSON
        app.setup_security(allowed_serializers=["json"])
    return app


@functools.lru_cache(maxsize=1)
def caller_app() -> Celery:
    """The process's app for sending tasks by name and reading their results."""
    return create_celery(get_settings())
