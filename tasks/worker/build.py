"""The worker's side of a build: single flight on the build key, the build from the checked context, the outcome counted.

When the image lives on another host, the call returns ``Forward`` and the
Celery task re-sends itself to that host's queue (``dockyard.tasks.worker.holder``).
The owner's build runs under a ``CancelWatch`` of its task (``dockyard.tasks.worker.cancel_watch``),
and a task waiting for another owner's build leaves it when it is cancelled.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable

import docker
import redis

from dockyard.config.settings import Settings
from dockyard.tasks import keyspace
from dockyard.tasks.cache.single_flight import Entry, Outcome, build_cache
from dockyard.tasks.context.materialize import shared_directory, stored_archive, unpacked_directory
from dockyard.tasks.engine.build import build_from_archive, build_in
from dockyard.tasks.engine.build_stop import BuildStop
from dockyard.tasks.engine.images import built_on, engine_digest, local_image_id
from dockyard.tasks.engine.limits import build_limits, limited
from dockyard.tasks.errors import BaseUnavailable, BuilderRace, BuildError
from dockyard.tasks.farm import hosts, image_use, metrics
from dockyard.tasks.registry.base_images import worker_cache_key
from dockyard.tasks.request.build_secrets import materialized_secrets
from dockyard.tasks.request.results import FarmBuildResult
from dockyard.tasks.worker.here import Here
from dockyard.tasks.request.spec import BuildSpec
from dockyard.tasks.routing import placement
from dockyard.tasks.teams import cancel
from dockyard.tasks.worker.cancel_watch import CancelWatch
from dockyard.tasks.worker.holder import Forward, finish_on_holder, pinned_here


BUILDER_RACE_ATTEMPTS = 3  # a build whose cache probe lost an image to a concurrent removal runs again at once


EVICTED_RETRIES = 3  # a joined build whose image the disk budget removed before it was tagged is built again


def _valid_entry(here: Here, pins: image_use.Pins) -> Callable[[Entry], bool]:
    """A cache entry is good if its image is here (pinned for this task), or its host still heartbeats."""

    def valid(entry: Entry) -> bool:
        if entry.host == here.settings.host_id:
            return pinned_here(pins, here.client, entry.value["image_id"])
        return hosts.is_alive(here.connection, here.settings, entry.host)

    return valid


def pin_bases(spec: BuildSpec, client: docker.DockerClient, pins: image_use.Pins) -> None:
    """Pin the base images this host has of ``spec`` (one of them may be an image dockyard built here)."""
    for reference in spec.base_images:
        if (image_id := local_image_id(client, reference)) is not None:
            pins.pin(image_id)


def execute_build(
    spec: BuildSpec,
    *,
    here: Here,
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
    with image_use.Pins(here.connection, here.settings) as pins:
        return _build_pinned(spec, pins, here=here,
                             owner=owner, on_takeover=on_takeover, started=started)


def _build_pinned(
    spec: BuildSpec,
    pins: image_use.Pins,
    *,
    here: Here,
    owner: str | None,
    on_takeover: Callable[[], None] | None,
    started: float,
) -> FarmBuildResult | Forward:
    cache = build_cache(here.connection, here.settings)
    cache_key, bases = worker_cache_key(spec, here.settings, lambda reference: engine_digest(reference, here.client))

    def compute() -> dict[str, str]:
        pin_bases(spec, here.client, pins)
        image_id = build_watched(spec, cache_key, here=here, owner=owner)
        pins.pin(image_id)
        if spec.build_backend == "docker-py" and not built_on(here.client, bases):
            raise BaseUnavailable(f"A base image of {spec.image_name} moved while it was built; it is built again.")
        hosts.record_image(  # the tags' locations before the entry: a joiner woken by the entry answers at once
            here.connection, here.settings, host_id=here.settings.host_id, image_id=image_id, references=spec.references,
            cache_keys=[cache.entry_key(cache_key)],
        )
        return {"image_id": image_id}

    for _attempt in range(EVICTED_RETRIES):
        run_at = time.monotonic()
        outcome = cache.run(
            cache_key, compute, valid=_valid_entry(here, pins),
            ignore_cache=spec.ignore_cache, host=here.settings.host_id, owner=owner, on_takeover=on_takeover,
            check_cancel=None if owner is None else lambda: cancel.check(
                here.connection, here.settings, owner, doing="it left the build it waited for"),
        )
        record_build(here.connection, here.settings, outcome, time.monotonic() - run_at)
        if outcome.source == "built":  # this engine's layers are now the lineage's warmest
            placement.record_built(here.connection, here.settings, placement.lineage_of_options(spec), here.settings.host_id)
        image_id = outcome.value["image_id"]
        if outcome.entry.host != here.settings.host_id:
            return Forward(outcome.entry.host, image_id, outcome.source, cache_key)
        if outcome.source in ("built", "hit") or pinned_here(pins, here.client, image_id):  # a hit was pinned by valid
            answer = finish_on_holder(
                spec, image_id, outcome.source, cache_key=cache_key, here=here,
            )
            if outcome.source == "hit":
                metrics.observe(here.connection, here.settings, "hit_seconds", time.monotonic() - started)
            return answer
        cache.invalidate(cache_key)  # the build it joined was evicted meanwhile: a miss, built again
    raise BuildError(f"The image of {spec.image_name} was evicted {EVICTED_RETRIES} times before it could be tagged.")


def build_watched(spec: BuildSpec, cache_key: str, *, here: Here, owner: str | None) -> str:
    """``build_racing_removals`` for the task ``owner``, stopped on the engine if the task is cancelled
    and no one else waits for ``cache_key`` (``Cancelled``, naming the task)."""
    if owner is None:
        return build_racing_removals(spec, here=here)
    cancel.check(here.connection, here.settings, owner, doing="before its build started")
    with CancelWatch(here.connection, here.settings, task_id=owner, cache_key=cache_key) as watch:
        try:
            return build_racing_removals(spec, here=here, stop=watch.stop)
        except Exception as exc:
            if watch.stopped:
                raise cancel.cancelled_error(owner, "its build was stopped on the engine") from exc
            raise


def build_spec(
    spec: BuildSpec,
    *,
    here: Here,
    stop: BuildStop | None = None,
) -> str:
    """Build ``spec`` on this host from its checked context (see ``dockyard.tasks.context.materialize``); the image id.

    Every step runs under the farm's limits, or the smaller ones the spec asks for (``dockyard.tasks.engine.limits``).
    """
    limits = build_limits(spec, here.settings, here.client)
    with contextlib.ExitStack() as stack:
        here = dataclasses.replace(here, output=stack.enter_context(
            limited(spec.build_backend, limits, client=here.client, settings=here.settings, output=here.output)
        ))
        secrets = None
        if spec.sealed_secrets:
            secrets = stack.enter_context(
                materialized_secrets(spec.sealed_secrets, here.settings.seal_private_key, team=here.settings.team)
            )
        if spec.context_path:
            directory = shared_directory(spec, here.settings)
        else:
            archive = stack.enter_context(stored_archive(spec, keyspace.context_store_for(here.settings), here.settings))
            if spec.build_backend == "docker-py":
                return build_from_archive(
                    spec, archive, auto_lines=spec.dockerfile_lines, client=here.client, settings=here.settings,
                    output=here.output, stop=stop,
                )
            directory = stack.enter_context(unpacked_directory(archive, here.settings))
        return build_in(
            spec, context=directory, auto_lines=spec.dockerfile_lines, secrets=secrets,
            client=here.client, settings=here.settings, output=here.output, stop=stop,
        )


def build_racing_removals(
    spec: BuildSpec,
    *,
    here: Here,
    stop: BuildStop | None = None,
) -> str:
    """``build_spec``, run again at once when the classic builder lost an image that a removal (the
    disk budget's, on this host) took while it looked at it (``BuilderRace``)."""
    for attempt in range(1, BUILDER_RACE_ATTEMPTS + 1):
        try:
            return build_spec(spec, here=here, stop=stop)
        except BuilderRace:
            if attempt == BUILDER_RACE_ATTEMPTS:
                raise
            here.output("dockyard: an image the builder looked at was removed meanwhile; building again\n")
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


def execute_tag(
    spec: BuildSpec,
    image_id: str,
    source: str,
    *,
    here: Here,
    owner: str | None = None,
    cache_key: str | None = None,
) -> FarmBuildResult | Forward:
    """Apply tags to a cached image on its host; rebuild if it vanished behind dockyard's back.

    ``cache_key`` (from the forwarding task) is taken only if this host's entry under it holds
    ``image_id``; otherwise the key is resolved here (the bases' digests asked again). An image
    the spec's own entry does not hold is never tagged for (nor owned by) the sender: the spec
    is built as any other (a message naming an image id is no right to it, docs/security.md).
    """
    cache = build_cache(here.connection, here.settings)
    entry = cache.peek(cache_key) if cache_key else None
    if entry is None or entry.host != here.settings.host_id or entry.value.get("image_id") != image_id:
        cache_key, _bases = worker_cache_key(spec, here.settings, lambda reference: engine_digest(reference, here.client))
        entry = cache.peek(cache_key)
        if entry is None or entry.value.get("image_id") != image_id:
            return execute_build(spec, here=here, owner=owner)
    assert cache_key is not None
    with image_use.Pins(here.connection, here.settings) as pins:
        if pinned_here(pins, here.client, image_id):
            return finish_on_holder(
                spec, image_id, source, cache_key=cache_key, here=here
            )
    hosts.forget_image(here.connection, here.settings, host_id=here.settings.host_id, image_id=image_id)
    build_cache(here.connection, here.settings).invalidate(cache_key)
    return execute_build(spec, here=here, owner=owner)
