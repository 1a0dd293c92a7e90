"""The Celery app, configured from the settings."""

from __future__ import annotations

from celery import Celery

from config.celery import celery_config
from config.settings import Settings, get_settings
from workers import heartbeat  # noqa: F401 - connects the worker's heartbeat signals


def create_app(settings: Settings) -> Celery:
    """A Celery app for ``settings`` with dockyard's tasks registered."""
    app = Celery("dockyard", include=["tasks.celery_tasks"])
    app.conf.update(celery_config(settings))
    if settings.signs_messages:
        # task messages must be signed; results and remote control stay JSON
        app.setup_security(allowed_serializers=["json"])
    return app


app = create_app(get_settings())
