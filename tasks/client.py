"""The caller's side: signatures and chains sent by task name, and calls that wait.

``build`` and ``push`` answer straight from Redis when the result is already
cached (the fast path, no worker round trip); otherwise they send the task
and wait for it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from celery import Celery
from celery.canvas import Signature, chain
from celery.result import AsyncResult

from config.settings import Settings, get_settings
from tasks import hosts
from tasks.cache import JoinTimeout, SingleFlight
from tasks.cache_key import push_key
from tasks.context_store import upload_context
from tasks.execute import build_result
from tasks.naming import qualify_image_name, registry_of, validate_tags
from tasks.masking import masked_repr
from tasks.progress import OutputSink, StreamReader
from tasks.push import validate_credentials
from tasks.routing import BUILD_TASK, PUSH_TASK
from tasks.sealing import seal
from tasks.spec import BuildSpec, prepare_build
from tasks.keyspace import key, redis_for


def _app(app: Celery | None) -> Celery:
    if app is not None:
        return app
    from workers.app import app as default_app

    return default_app


def prepare_and_upload(image_name: str, params: Mapping[str, Any], settings: Settings) -> BuildSpec:
    """Pack the context, compute the key and put the context in the store if it is not there."""
    spec, packed = prepare_build({"image_name": image_name, **params}, settings)
    try:
        if spec.context_path is None:
            upload_context(redis_for(settings), settings, packed)
    finally:
        packed.close()
    return spec


def build_signature(image_name: str, *, app: Celery | None = None, **params: Any) -> Signature:
    """A build signature with prefect-docker's build arguments; the context is uploaded now."""
    spec = prepare_and_upload(image_name, params, get_settings())
    kwargs = {"spec": spec.model_dump()}
    return _app(app).signature(BUILD_TASK, kwargs=kwargs, kwargsrepr=masked_repr(kwargs))


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
    return _app(app).signature(PUSH_TASK, kwargs=kwargs, kwargsrepr=masked_repr(kwargs))




def build_and_push(
    image_name: str,
    *,
    credentials: Mapping[str, Any] | None = None,
    app: Celery | None = None,
    **build_params: Any,
) -> Signature:
    """``build | push``: push receives build's result and runs on the host that holds the image."""
    return chain(
        build_signature(image_name, app=app, **build_params),
        push_signature(credentials=credentials, app=app),
    )


def cached_build(spec: BuildSpec, settings: Settings) -> dict[str, Any] | None:
    """The fast path: the build's result if its image and all its tags are on a live host."""
    found = cached_entry(spec, settings)
    return found[0] if found else None


def cached_entry(spec: BuildSpec, settings: Settings) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """``cached_build``'s result with the cache entry it came from."""
    connection = redis_for(settings)
    flight = SingleFlight(connection, settings, namespace="build")
    pipe = connection.pipeline(transaction=False)
    pipe.get(flight.entry_key(spec.key))
    pipe.mget([key(settings, "image", reference) for reference in spec.references])
    raw_entry, raw_locations = pipe.execute()
    if not raw_entry:
        return None
    entry = json.loads(raw_entry)
    image_id = entry["value"]["image_id"]
    wanted = {"host": entry["host"], "image_id": image_id}
    if any(not raw or json.loads(raw) != wanted for raw in raw_locations):
        return None
    if not hosts.is_alive(connection, settings, entry["host"]):
        return None
    return build_result(spec, image_id, entry["host"], "hit"), entry


def wait_for_running_build(spec: BuildSpec, settings: Settings) -> dict[str, Any] | None:
    """Join a build of the same key already running on the farm: wait in Redis for its result.

    Returns the result once it is stored with this call's tags, or None if no
    build is running or it ended without them (then the caller sends a task).
    """
    connection = redis_for(settings)
    lease = SingleFlight(connection, settings, namespace="build").lease(spec.key)
    deadline = time.monotonic() + settings.task_time_limit_s + settings.lease_s
    while lease.held_by_anyone() and time.monotonic() < deadline:
        time.sleep(settings.join_poll_s)
        if (hit := cached_build(spec, settings)) is not None:
            return {**hit, "cache": "joined"}
    return cached_build(spec, settings)


def build(
    image_name: str,
    *,
    app: Celery | None = None,
    timeout_s: float | None = None,
    on_output: OutputSink | None = None,
    **params: Any,
) -> dict[str, Any]:
    """Build on the farm and wait: from the cache when possible, else through a worker.

    ``on_output`` receives the build's output lines while it runs, on whichever host.
    """
    settings = get_settings()
    spec, packed = prepare_build({"image_name": image_name, **params}, settings)
    reader = StreamReader(redis_for(settings), settings, spec.key) if on_output else None
    try:
        if not spec.ignore_cache:
            if (hit := cached_build(spec, settings)) is not None:
                return hit
            if (joined := wait_for_running_build(spec, settings)) is not None:
                return joined
        if spec.context_path is None:
            upload_context(redis_for(settings), settings, packed)
    finally:
        packed.close()
    kwargs = {"spec": spec.model_dump()}
    result = _app(app).signature(BUILD_TASK, kwargs=kwargs, kwargsrepr=masked_repr(kwargs)).apply_async()
    return await_build(
        result, spec, settings, timeout_s=timeout_s or settings.task_time_limit_s * 2,
        reader=reader, on_output=on_output,
    )


def await_build(
    result: AsyncResult,
    spec: BuildSpec,
    settings: Settings,
    *,
    timeout_s: float,
    reader: StreamReader | None = None,
    on_output: OutputSink | None = None,
) -> dict[str, Any]:
    """The task's result, or sooner the same key's result stored by another caller's build.

    Identical requests sent at the same moment each send a task; the first
    one stored answers them all, and their own tasks end as cheap hits.
    """
    deadline = time.monotonic() + timeout_s
    sent_at = time.time()
    while time.monotonic() < deadline:
        if result.ready():
            _drain(reader, on_output)
            answer: dict[str, Any] = result.get(timeout=1)
            return answer
        if not spec.ignore_cache and (found := cached_entry(spec, settings)) is not None:
            _drain(reader, on_output)
            hit, entry = found
            if entry.get("owner") == result.id:
                return {**hit, "cache": "built"}
            return {**hit, "cache": "joined" if entry["created_at"] >= sent_at - 1 else "hit"}
        if reader is not None and on_output is not None:
            for line in reader.read(block_s=settings.join_poll_s):
                on_output(line + "\n")
        else:
            time.sleep(settings.join_poll_s)
    raise JoinTimeout(f"No result for {spec.image_name}:{spec.tag} within {timeout_s:.0f} s.")


def _drain(reader: StreamReader | None, on_output: OutputSink | None) -> None:
    """Pass on the lines written before the result was seen."""
    if reader is not None and on_output is not None:
        for line in reader.read(block_s=0.001):
            on_output(line + "\n")


def cached_push(image_name: str, tag: str | None, additional_tags: list[str] | None, settings: Settings) -> dict[str, Any] | None:
    """The fast path of a push: the same image, repository, tags and registry were pushed before."""
    connection = redis_for(settings)
    reference = f"{image_name}:{tag or 'latest'}"
    location = hosts.locate_images(connection, settings, [reference])[0]
    if location is None:
        return None
    tags = [tag or "latest", *(additional_tags or [])]
    key = push_key(image_id=location["image_id"], repository=image_name, tags=tags, registry=registry_of(image_name))
    entry = SingleFlight(connection, settings, namespace="push").lookup(key)
    if entry is None:
        return None
    return {**entry["value"], "host": location["host"], "cache": "hit"}


def push(
    image_name: str,
    *,
    tag: str | None = None,
    credentials: Mapping[str, Any] | None = None,
    additional_tags: list[str] | None = None,
    ignore_cache: bool = False,
    build_backend: str = "docker-py",
    app: Celery | None = None,
    timeout_s: float | None = None,
) -> dict[str, Any]:
    """Push on the farm (on the host holding the image) and wait; a repeated push is a hit."""
    settings = get_settings()
    qualified = qualify_image_name(image_name, settings.default_namespace)
    validate_tags([tag] if tag else [], additional_tags)
    validate_credentials(credentials)
    if not ignore_cache and (hit := cached_push(qualified, tag, additional_tags, settings)) is not None:
        return hit
    signature = push_signature(
        qualified, credentials=credentials, tag=tag, additional_tags=additional_tags,
        ignore_cache=ignore_cache, build_backend=build_backend, app=app,
    )
    answer: dict[str, Any] = signature.apply_async().get(timeout=timeout_s or settings.task_time_limit_s * 2)
    return answer
