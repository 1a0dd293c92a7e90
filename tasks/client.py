"""The caller's side: signatures and chains for build and push, sent by task name."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from celery import Celery
from celery.canvas import Signature, chain

from config.settings import get_settings
from tasks.push import validate_credentials
from tasks.routing import BUILD_TASK, PUSH_TASK
from tasks.secrets import seal


def _app(app: Celery | None) -> Celery:
    if app is not None:
        return app
    from workers.app import app as default_app

    return default_app


def build_signature(image_name: str, *, app: Celery | None = None, **params: Any) -> Signature:
    """A build task signature with prefect-docker's build arguments."""
    return _app(app).signature(BUILD_TASK, kwargs={"image_name": image_name, **params})


def push_signature(
    image_name: str | None = None,
    *,
    credentials: Mapping[str, Any] | None = None,
    app: Celery | None = None,
    **params: Any,
) -> Signature:
    """A push signature; credentials are sealed with the farm's key before they leave."""
    kwargs: dict[str, Any] = dict(params)
    if image_name is not None:
        kwargs["image_name"] = image_name
    if credentials is not None:
        validate_credentials(credentials)
        kwargs["credentials"] = seal(credentials, get_settings().secret_key)
    return _app(app).signature(PUSH_TASK, kwargs=kwargs)


def build_and_push(
    image_name: str,
    *,
    credentials: Mapping[str, Any] | None = None,
    app: Celery | None = None,
    **build_params: Any,
) -> Signature:
    """``build | push``: push receives build's result and runs on the host that built it."""
    return chain(
        build_signature(image_name, app=app, **build_params),
        push_signature(credentials=credentials, app=app),
    )
