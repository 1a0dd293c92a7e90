"""The workers' Celery app: the configured app with dockyard's tasks and heartbeat signals."""

from __future__ import annotations

from celery import Celery

from dockyard.tasks.celery_app import create_celery
from dockyard.config.settings import Settings, get_settings
from dockyard.workers import heartbeat  # noqa: F401 - connects the worker's heartbeat signals
from dockyard.workers import kombu_fix


def create_app(settings: Settings) -> Celery:
    """A Celery app for ``settings`` with dockyard's tasks registered (and kombu's failover crash fixed)."""
    kombu_fix.install()
    return create_celery(settings, include=["dockyard.tasks.celery_tasks"], worker=True)


app = create_app(get_settings())
