"""The worker's side of a push: the image the request names, found here, on its holder or built again; one push per key.

A cached push answers only while the registry still serves its digest under each tag.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import docker
import redis

from dockyard.config.settings import Settings
from dockyard.tasks.cache.single_flight import Entry, Outcome, push_cache
from dockyard.tasks.engine.connection import docker_client
from dockyard.tasks.engine.images import local_image_id
from dockyard.tasks.engine.push import push_in
from dockyard.tasks.errors import PushError
from dockyard.tasks.farm import hosts, image_use, metrics, rebuild
from dockyard.tasks.keyspace import key
from dockyard.tasks.output import OutputSink
from dockyard.tasks.registry import manifests as registry
from dockyard.tasks.registry.login import farm_credentials
from dockyard.tasks.request.cache_key import push_key
from dockyard.tasks.request.naming import registry_of
from dockyard.tasks.request.results import FarmPushResult, farm_push_result
from dockyard.tasks.request.spec import BuildSpec, Credentials, PushRequest
from dockyard.tasks.worker.holder import Forward, pinned_here
from dockyard.tasks.worker.build import execute_build


def image_to_push(
    request: PushRequest, *, settings: Settings, connection: redis.Redis, client: docker.DockerClient,
    pins: image_use.Pins | None = None,
) -> str | Forward | BuildSpec:
    """The image id this host pushes, the live host to forward to, or the spec to build it again from.

    A request that names its ``image_id`` gets that image or a clear error,
    never whatever its tag names here; one without (sent by name, not by
    dockyard's client) takes the image its tag names on this host. With
    ``pins``, the image found here is pinned first: one being evicted counts as gone.
    """
    pins = pins or image_use.Pins(connection, settings)
    wanted = request.image_id
    here = wanted if wanted is not None and pinned_here(pins, client, wanted) else None
    if wanted is None and (named := local_image_id(client, request.reference)) is not None:
        here = named if pinned_here(pins, client, named) else None
    if here is not None:
        image_use.refresh_use(connection, settings, settings.host_id, here)
        return here
    location = hosts.locate_images(connection, settings, [request.reference])[0]
    if (
        location
        and location["host"] != settings.host_id
        and (wanted is None or location["image_id"] == wanted)
        and hosts.is_alive(connection, settings, location["host"])
    ):
        return Forward(location["host"], location["image_id"], "forwarded")
    if wanted is None and location is None:
        wanted = image_use.evicted_image(connection, settings, request.reference)  # removed by the disk budget
    if wanted is not None and (spec := rebuild.recall(connection, settings, wanted)) is not None:
        return spec  # its only copy died with its host or was evicted: built again here, by the same key
    if wanted is not None:
        raise PushError(
            f"Image {wanted} ({request.reference}) is no longer on host {settings.host_id} "
            "nor on any live host: build it again."
        )
    raise PushError(f"No image {request.reference} on host {settings.host_id} or on any live host.")


def served_by_registry(request: PushRequest, credentials: Credentials | None, settings: Settings) -> Callable[[Entry], bool]:
    """A push hit holds only while the registry serves its digest under every tag (one HEAD per tag).

    Without the request's credentials, the farm's own login asks.
    """
    if credentials is None:
        credentials = farm_credentials(settings)

    def valid(entry: Entry) -> bool:
        return registry.serves(request.image_name, request.tags, entry.value.get("digest"), credentials)

    return valid


def execute_push(
    request: PushRequest,
    credentials: Credentials | None,
    *,
    settings: Settings,
    connection: redis.Redis,
    client: docker.DockerClient,
    output: OutputSink,
) -> FarmPushResult | Forward:
    """Push once per (image, repository, tags, registry); forward to the holder if it is elsewhere.

    A cached push answers only while the registry still serves its digest under each tag.
    """
    with image_use.Pins(connection, settings) as pins:
        return _push_pinned(request, credentials, pins, settings=settings, connection=connection, client=client,
                            output=output)


def _push_pinned(
    request: PushRequest,
    credentials: Credentials | None,
    pins: image_use.Pins,
    *,
    settings: Settings,
    connection: redis.Redis,
    client: docker.DockerClient,
    output: OutputSink,
) -> FarmPushResult | Forward:
    found = image_to_push(request, settings=settings, connection=connection, client=client, pins=pins)
    if isinstance(found, BuildSpec):
        rebuilt = execute_build(found, settings=settings, connection=connection, client=client, output=output)
        if isinstance(rebuilt, Forward):  # another live host holds it now
            return Forward(rebuilt.host, rebuilt.image_id, "forwarded")
        found = rebuilt["image_id"]
        pins.pin(found)
    if isinstance(found, Forward):
        return found
    pinned = request.model_copy(update={"image_id": found})
    cache_key = push_key(
        image_id=found, repository=request.image_name, tags=request.tags, registry=registry_of(request.image_name)
    )

    def compute() -> dict[str, Any]:
        with connection.lock(key(settings, "pushing", settings.host_id, request.image_name), timeout=settings.task_time_limit_s):
            if credentials is None:
                digest = push_in(pinned, None, client=client, settings=settings, output=output)
            else:
                with docker_client(settings) as private:  # a login stays in this call's own client
                    digest = push_in(pinned, credentials, client=private, settings=settings, output=output)
        return {"digest": digest}

    started = time.monotonic()
    outcome: Outcome = push_cache(connection, settings).run(
        cache_key, compute, valid=served_by_registry(request, credentials, settings), ignore_cache=request.ignore_cache,
    )
    if outcome.source == "built":
        metrics.count(connection, settings, "pushes_total")
        metrics.observe(connection, settings, "push_seconds", time.monotonic() - started)
    else:
        metrics.count(connection, settings, "push_cache_hits_total")
    return farm_push_result(request, outcome.value.get("digest"), host=settings.host_id, cache=outcome.source)
