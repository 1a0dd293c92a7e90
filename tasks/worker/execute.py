"""The worker's side of build, tag and push: cache, single flight and host affinity.

Each function runs on one host with that host's engine. When the image a
call needs lives on another host, it returns ``Forward`` and the Celery task
re-sends itself to that host's queue.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import redis

from dockyard.config.settings import Settings
from dockyard.tasks.routing import fast_lane
from dockyard.tasks.farm import hosts
from dockyard.tasks.farm import image_use
from dockyard.tasks import keyspace
from dockyard.tasks.farm import metrics
from dockyard.tasks.cache import notify
from dockyard.tasks.routing import placement
from dockyard.tasks.farm import rebuild
from dockyard.tasks.registry import manifests as registry
from dockyard.tasks.registry.base_images import built_on, worker_cache_key
from dockyard.tasks.engine.build import OutputSink, apply_tags, build_from_archive, build_in
from dockyard.tasks.request.build_secrets import materialized_secrets
from dockyard.tasks.cache.single_flight import Entry, Outcome, build_cache, push_cache
from dockyard.tasks.request.cache_key import push_key
from dockyard.tasks.engine.connection import docker_client
from dockyard.tasks.keyspace import key
from dockyard.tasks.errors import BaseUnavailable, BuilderRace, BuildError, PushError
from dockyard.tasks.context.materialize import shared_directory, stored_archive, unpacked_directory
from dockyard.tasks.request.naming import registry_of
from dockyard.tasks.engine.push import push_in
from dockyard.tasks.request.results import cache_source, FarmBuildResult, FarmPushResult, farm_build_result, farm_push_result
from dockyard.tasks.request.spec import BuildSpec, Credentials, PushRequest


BUILDER_RACE_ATTEMPTS = 3  # a build whose cache probe lost an image to a concurrent removal runs again at once
EVICTED_RETRIES = 3  # a joined build whose image the disk budget removed before it was tagged is built again


@dataclass(frozen=True)
class Forward:
    """The work belongs on ``host``: send it to that host's queue."""

    host: str
    image_id: str
    source: str
    cache_key: str | None = None  # the build's cache key, which the holder checks against its entry


def image_exists(client: docker.DockerClient, image_id: str) -> bool:
    try:
        client.images.get(image_id)
    except docker.errors.ImageNotFound:
        return False
    return True


def pinned_here(pins: image_use.Pins, client: docker.DockerClient, image_id: str) -> bool:
    """``image_id`` is on this host and stays for this task: pinned first (the disk budget then
    leaves it), then looked up. False if it is gone or being evicted."""
    return pins.pin(image_id) and image_exists(client, image_id)


def _valid_entry(
    client: docker.DockerClient, connection: redis.Redis, settings: Settings, pins: image_use.Pins
) -> Callable[[Entry], bool]:
    """A cache entry is good if its image is here (pinned for this task), or its host still heartbeats."""

    def valid(entry: Entry) -> bool:
        if entry.host == settings.host_id:
            return pinned_here(pins, client, entry.value["image_id"])
        return hosts.is_alive(connection, settings, entry.host)

    return valid


def pin_bases(spec: BuildSpec, client: docker.DockerClient, pins: image_use.Pins) -> None:
    """Pin the base images this host has of ``spec`` (one of them may be an image dockyard built here)."""
    for reference in spec.base_images:
        if (image_id := local_image_id(client, reference)) is not None:
            pins.pin(image_id)


def execute_build(
    spec: BuildSpec,
    *,
    settings: Settings,
    connection: redis.Redis,
    client: docker.DockerClient,
    output: OutputSink,
    owner: str | None = None,
    on_takeover: Callable[[], None] | None = None,
    started: float | None = None,
) -> FarmBuildResult | Forward:
    """Build once per key on the farm; tag here, or forward to the host holding the image.

    ``on_takeover``: see ``SingleFlight.run`` (the task's fresh time budget). The images this
    call uses here are pinned until it returns (``dockyard.tasks.farm.image_use``): the disk budget leaves them.
    ``started``: when the task began (``time.monotonic``; default now), for a hit's latency.
    """
    started = time.monotonic() if started is None else started
    with image_use.Pins(connection, settings) as pins:
        return _build_pinned(spec, pins, settings=settings, connection=connection, client=client, output=output,
                             owner=owner, on_takeover=on_takeover, started=started)


def _build_pinned(
    spec: BuildSpec,
    pins: image_use.Pins,
    *,
    settings: Settings,
    connection: redis.Redis,
    client: docker.DockerClient,
    output: OutputSink,
    owner: str | None,
    on_takeover: Callable[[], None] | None,
    started: float,
) -> FarmBuildResult | Forward:
    cache = build_cache(connection, settings)
    cache_key, bases = worker_cache_key(spec, settings, client)

    def compute() -> dict[str, str]:
        pin_bases(spec, client, pins)
        image_id = build_racing_removals(spec, settings=settings, connection=connection, client=client, output=output)
        pins.pin(image_id)
        if spec.build_backend == "docker-py" and not built_on(client, bases):
            raise BaseUnavailable(f"A base image of {spec.image_name} moved while it was built; it is built again.")
        hosts.record_image(  # the tags' locations before the entry: a joiner woken by the entry answers at once
            connection, settings, host_id=settings.host_id, image_id=image_id, references=spec.references,
            cache_keys=[cache.entry_key(cache_key)],
        )
        return {"image_id": image_id}

    for _attempt in range(EVICTED_RETRIES):
        run_at = time.monotonic()
        outcome = cache.run(
            cache_key, compute, valid=_valid_entry(client, connection, settings, pins),
            ignore_cache=spec.ignore_cache, host=settings.host_id, owner=owner, on_takeover=on_takeover,
        )
        record_build(connection, settings, outcome, time.monotonic() - run_at)
        if outcome.source == "built":  # this engine's layers are now the lineage's warmest
            placement.record_built(connection, settings, placement.lineage_of_options(spec), settings.host_id)
        image_id = outcome.value["image_id"]
        if outcome.entry.host != settings.host_id:
            return Forward(outcome.entry.host, image_id, outcome.source, cache_key)
        if outcome.source in ("built", "hit") or pinned_here(pins, client, image_id):  # a hit was pinned by valid
            answer = finish_on_holder(
                spec, image_id, outcome.source, cache_key=cache_key, settings=settings, connection=connection,
                client=client,
            )
            if outcome.source == "hit":
                metrics.observe(connection, settings, "hit_seconds", time.monotonic() - started)
            return answer
        cache.invalidate(cache_key)  # the build it joined was evicted meanwhile: a miss, built again
    raise BuildError(f"The image of {spec.image_name} was evicted {EVICTED_RETRIES} times before it could be tagged.")


def build_spec(
    spec: BuildSpec,
    *,
    settings: Settings,
    connection: redis.Redis,
    client: docker.DockerClient,
    output: OutputSink,
) -> str:
    """Build ``spec`` on this host from its checked context (see ``dockyard.tasks.context.materialize``); the image id."""
    with contextlib.ExitStack() as stack:
        secrets = None
        if spec.sealed_secrets:
            secrets = stack.enter_context(materialized_secrets(spec.sealed_secrets, settings.seal_private_key))
        if spec.context_path:
            directory = shared_directory(spec, settings)
        else:
            archive = stack.enter_context(stored_archive(spec, keyspace.context_store_for(settings), settings))
            if spec.build_backend == "docker-py":
                return build_from_archive(spec, archive, auto_lines=spec.dockerfile_lines, client=client, output=output)
            directory = stack.enter_context(unpacked_directory(archive, settings))
        return build_in(
            spec, context=directory, auto_lines=spec.dockerfile_lines, secrets=secrets,
            client=client, settings=settings, output=output,
        )


def build_racing_removals(
    spec: BuildSpec,
    *,
    settings: Settings,
    connection: redis.Redis,
    client: docker.DockerClient,
    output: OutputSink,
) -> str:
    """``build_spec``, run again at once when the classic builder lost an image that a removal (the
    disk budget's, on this host) took while it looked at it (``BuilderRace``)."""
    for attempt in range(1, BUILDER_RACE_ATTEMPTS + 1):
        try:
            return build_spec(spec, settings=settings, connection=connection, client=client, output=output)
        except BuilderRace:
            if attempt == BUILDER_RACE_ATTEMPTS:
                raise
            output("dockyard: an image the builder looked at was removed meanwhile; building again\n")
    raise AssertionError("unreachable")


def record_build(connection: redis.Redis, settings: Settings, outcome: Outcome, seconds: float) -> None:
    """Count a build request's outcome on this host; ``seconds``: how long single flight took to
    have it (a build's time, or a join's wait)."""
    if outcome.source == "built":
        metrics.count(connection, settings, "cache_misses_total")
        metrics.count(connection, settings, "builds_total")
        metrics.observe(connection, settings, "build_seconds", seconds)
        if outcome.took_over:
            metrics.count(connection, settings, "lease_takeovers_total")
    elif outcome.source == "joined":
        metrics.count(connection, settings, "joins_total")
        metrics.observe(connection, settings, "wait_seconds", seconds)
    else:
        metrics.count(connection, settings, "cache_hits_total")


def finish_on_holder(
    spec: BuildSpec,
    image_id: str,
    source: str,
    *,
    cache_key: str,
    settings: Settings,
    connection: redis.Redis,
    client: docker.DockerClient,
    tags_in_place: bool = False,
) -> FarmBuildResult:
    """On the host holding ``image_id``: apply the spec's tags (unless ``tags_in_place``), record where they are
    and its last use."""
    if source != "built" and not tags_in_place:
        apply_tags(client, image_id, spec.image_name, [spec.tag, *spec.additional_tags])
    hosts.record_image(
        connection, settings, host_id=settings.host_id, image_id=image_id, references=spec.references,
        cache_keys=[build_cache(connection, settings).entry_key(cache_key)], used=True,
    )
    rebuild.remember(connection, settings, spec, cache_key, image_id)
    fast_lane.remember_key(connection, settings, spec, cache_key)
    notify.announce(connection, settings, "build", cache_key, "answered")  # its callers wake (dockyard.tasks.client)
    return farm_build_result(spec, image_id, host=settings.host_id, cache=cache_source(source))


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
    cache_key: str | None = None,
) -> FarmBuildResult | Forward:
    """Apply tags to a cached image on its host; rebuild if it vanished behind dockyard's back.

    ``cache_key`` (from the forwarding task) is taken only if this host's entry under it holds
    ``image_id``; otherwise the key is resolved here (the bases' digests asked again).
    """
    entry = build_cache(connection, settings).peek(cache_key) if cache_key else None
    if entry is None or entry.host != settings.host_id or entry.value.get("image_id") != image_id:
        cache_key, _bases = worker_cache_key(spec, settings, client)
    assert cache_key is not None
    with image_use.Pins(connection, settings) as pins:
        if pinned_here(pins, client, image_id):
            return finish_on_holder(
                spec, image_id, source, cache_key=cache_key, settings=settings, connection=connection, client=client
            )
    hosts.forget_image(connection, settings, host_id=settings.host_id, image_id=image_id)
    build_cache(connection, settings).invalidate(cache_key)
    return execute_build(spec, settings=settings, connection=connection, client=client, output=output, owner=owner)


def local_image_id(client: docker.DockerClient, reference: str) -> str | None:
    try:
        return str(client.images.get(reference).id)
    except docker.errors.ImageNotFound:
        return None


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
    if credentials is None and settings.registry_username and settings.registry_password:
        credentials = Credentials(
            username=settings.registry_username, password=settings.registry_password.get_secret_value(),
            registry_url=settings.registry_url,
        )

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
