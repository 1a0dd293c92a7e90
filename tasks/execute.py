"""The worker's side of build, tag and push: cache, single flight and host affinity.

Each function runs on one host with that host's engine. When the image a
call needs lives on another host, it returns ``Forward`` and the Celery task
re-sends itself to that host's queue.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import redis

from config.settings import Settings
from tasks import hosts, metrics
from tasks.build import OutputSink, apply_tags, build_image
from tasks.build_secrets import materialized_secrets
from tasks.cache import Outcome, SingleFlight
from tasks.cache_key import push_key
from tasks.context import private_directory, remove_directory, unpack_context
from tasks.context_store import download_context
from tasks.engine import docker_client
from tasks.errors import PushError
from tasks.naming import qualify_image_name, registry_of, validate_tags
from tasks.push import push_image, validate_credentials
from tasks.spec import BuildSpec


@dataclass(frozen=True)
class Forward:
    """The work belongs on ``host``: send it to that host's queue."""

    host: str
    image_id: str
    source: str


def image_exists(client: docker.DockerClient, image_id: str) -> bool:
    try:
        client.images.get(image_id)
    except docker.errors.ImageNotFound:
        return False
    return True


def _valid_entry(client: docker.DockerClient, connection: redis.Redis, settings: Settings):  # type: ignore[no-untyped-def]
    """A cache entry is good if its image is here, or its host still heartbeats."""

    def valid(entry: Mapping[str, Any]) -> bool:
        if entry["host"] == settings.host_id:
            return image_exists(client, entry["value"]["image_id"])
        return hosts.is_alive(connection, settings, entry["host"])

    return valid


@contextlib.contextmanager
def materialized_context(spec: BuildSpec, connection: redis.Redis, settings: Settings) -> Iterator[Path]:
    """The build context as a directory: the shared path, or a private unpacked copy."""
    if spec.context_path:
        yield Path(spec.context_path)
        return
    directory = private_directory()
    try:
        with download_context(connection, settings, spec.context_digest) as archive:
            unpack_context(archive, directory)
        yield directory
    finally:
        remove_directory(directory)


def build_result(spec: BuildSpec, image_id: str, host: str, source: str) -> dict[str, Any]:
    """prefect-docker's build result, plus the host holding the image and the cache outcome."""
    return {
        "image_name": spec.image_name,
        "tag": spec.tag,
        "image": f"{spec.image_name}:{spec.tag}",
        "image_id": image_id,
        "additional_tags": list(spec.additional_tags),
        "host": host,
        "cache": source,
    }


def execute_build(
    spec: BuildSpec,
    *,
    settings: Settings,
    connection: redis.Redis,
    client: docker.DockerClient,
    output: OutputSink,
    owner: str | None = None,
) -> dict[str, Any] | Forward:
    """Build once per key on the farm; tag here, or forward to the host holding the image."""
    cache = SingleFlight(connection, settings, namespace="build")

    def compute() -> dict[str, str]:
        with contextlib.ExitStack() as stack:
            directory = stack.enter_context(materialized_context(spec, connection, settings))
            build_kwargs: dict[str, Any] = {**spec.build_kwargs, "path": str(directory)}
            if spec.sealed_secrets:
                build_kwargs["secrets"] = stack.enter_context(
                    materialized_secrets(spec.sealed_secrets, settings.secret_key)
                )
            built = build_image(
                spec.image_name, dockerfile=spec.dockerfile, tag=spec.tag,
                additional_tags=spec.additional_tags, build_backend=spec.build_backend,
                build_kwargs=build_kwargs,
                settings=settings, client=client, output=output, auto_lines=spec.dockerfile_lines,
            )
        return {"image_id": built["image_id"]}

    started = time.monotonic()
    outcome = cache.run(
        spec.key, compute, valid=_valid_entry(client, connection, settings),
        ignore_cache=spec.ignore_cache, host=settings.host_id, owner=owner,
    )
    record_build(connection, settings, outcome, time.monotonic() - started)
    image_id = outcome.value["image_id"]
    if outcome.entry["host"] != settings.host_id:
        return Forward(outcome.entry["host"], image_id, outcome.source)
    return finish_on_holder(spec, image_id, outcome.source, settings=settings, connection=connection, client=client)


def record_build(connection: redis.Redis, settings: Settings, outcome: Outcome, seconds: float) -> None:
    """Count a build request's outcome on this host."""
    if outcome.source == "built":
        metrics.count(connection, settings, "cache_misses_total")
        metrics.count(connection, settings, "builds_total")
        metrics.observe(connection, settings, "build_seconds", seconds)
        if outcome.took_over:
            metrics.count(connection, settings, "lease_takeovers_total")
    elif outcome.source == "joined":
        metrics.count(connection, settings, "joins_total")
    else:
        metrics.count(connection, settings, "cache_hits_total")


def finish_on_holder(
    spec: BuildSpec,
    image_id: str,
    source: str,
    *,
    settings: Settings,
    connection: redis.Redis,
    client: docker.DockerClient,
) -> dict[str, Any]:
    """On the host holding ``image_id``: apply the spec's tags and record where they are."""
    if source != "built":
        apply_tags(client, image_id, spec.image_name, [spec.tag, *spec.additional_tags])
    hosts.record_image(
        connection, settings, host_id=settings.host_id, image_id=image_id, references=spec.references,
        cache_keys=[SingleFlight(connection, settings, namespace="build").entry_key(spec.key)],
    )
    return build_result(spec, image_id, settings.host_id, source)


def execute_tag(
    spec: BuildSpec,
    image_id: str,
    source: str,
    *,
    settings: Settings,
    connection: redis.Redis,
    client: docker.DockerClient,
    output: OutputSink,
    owner: str | None = None,
) -> dict[str, Any] | Forward:
    """Apply tags to a cached image on its host; rebuild if it vanished behind dockyard's back."""
    if image_exists(client, image_id):
        return finish_on_holder(spec, image_id, source, settings=settings, connection=connection, client=client)
    hosts.forget_image(connection, settings, host_id=settings.host_id, image_id=image_id)
    SingleFlight(connection, settings, namespace="build").invalidate(spec.key)
    return execute_build(spec, settings=settings, connection=connection, client=client, output=output, owner=owner)


def local_image_id(client: docker.DockerClient, reference: str) -> str | None:
    try:
        return str(client.images.get(reference).id)
    except docker.errors.ImageNotFound:
        return None


def execute_push(
    image_name: str,
    *,
    tag: str | None,
    credentials: Mapping[str, Any] | None,
    additional_tags: list[str] | None,
    build_backend: str,
    ignore_cache: bool,
    settings: Settings,
    connection: redis.Redis,
    client: docker.DockerClient,
    output: OutputSink,
) -> dict[str, Any] | Forward:
    """Push once per (image, repository, tags, registry); forward to the holder if it is elsewhere."""
    image_name = qualify_image_name(image_name, settings.default_namespace)
    validate_credentials(credentials)
    validate_tags([tag] if tag else [], additional_tags)
    reference = f"{image_name}:{tag or 'latest'}"
    image_id = local_image_id(client, reference)
    if image_id is None:
        location = hosts.locate_images(connection, settings, [reference])[0]
        if location and location["host"] != settings.host_id and hosts.is_alive(connection, settings, location["host"]):
            return Forward(location["host"], location["image_id"], "forwarded")
        raise PushError(f"No image {reference} on host {settings.host_id} or on any live host.")
    tags = [tag or "latest", *(additional_tags or [])]
    cache_key = push_key(image_id=image_id, repository=image_name, tags=tags, registry=registry_of(image_name))

    def compute() -> dict[str, Any]:
        if credentials is None:
            return dict(push_image(
                image_name, tag=tag, additional_tags=additional_tags, build_backend=build_backend,
                settings=settings, client=client, output=output,
            ))
        with docker_client(settings) as private:  # a login stays in this call's own client
            return dict(push_image(
                image_name, tag=tag, credentials=credentials, additional_tags=additional_tags,
                build_backend=build_backend, settings=settings, client=private, output=output,
            ))

    started = time.monotonic()
    outcome: Outcome = SingleFlight(connection, settings, namespace="push").run(
        cache_key, compute, ignore_cache=ignore_cache
    )
    if outcome.source == "built":
        metrics.count(connection, settings, "pushes_total")
        metrics.observe(connection, settings, "push_seconds", time.monotonic() - started)
    else:
        metrics.count(connection, settings, "push_cache_hits_total")
    return {**outcome.value, "host": settings.host_id, "cache": outcome.source}
