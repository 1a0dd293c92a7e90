"""The worker's side of a push: the image the request names, found here, on its holder or built again; one push per key.

A cached push answers only while the registry still serves its digest under each tag.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


from dockyard.config.settings import Settings
from dockyard.tasks.cache.single_flight import Entry, Outcome, push_cache
from dockyard.tasks.engine.connection import docker_client
from dockyard.tasks.engine.images import local_image_id
from dockyard.tasks.engine.push import push_in
from dockyard.tasks.errors import PushError
from dockyard.tasks.farm import hosts, image_use, metrics, rebuild
from dockyard.tasks.keyspace import key
from dockyard.tasks.registry import manifests as registry
from dockyard.tasks.registry.login import farm_credentials
from dockyard.tasks.request.cache_key import push_key
from dockyard.tasks.request.naming import registry_of
from dockyard.tasks.request.results import FarmPushResult, farm_push_result
from dockyard.tasks.worker.here import Here
from dockyard.tasks.request.spec import BuildSpec, Credentials, PushRequest
from dockyard.tasks.worker.holder import Forward, pinned_here
from dockyard.tasks.worker.build import execute_build
from dockyard.tasks.teams import audit
from dockyard.tasks.teams.pushing import check_owned

REBUILD_ATTEMPTS = 3  # a rebuilt image the disk budget claims before the push pins it is built again this often


def image_to_push(
    request: PushRequest, *, here: Here,
    pins: image_use.Pins | None = None,
) -> str | Forward | BuildSpec:
    """The image id this host pushes, the live host to forward to, or the spec to build it again from.

    A request that names its ``image_id`` gets that image or a clear error,
    never whatever its tag names here; one without (sent by name, not by
    dockyard's client) takes the image its tag names on this host. With
    ``pins``, the image found here is pinned first: one being evicted counts as gone.
    """
    pins = pins or image_use.Pins(here.connection, here.settings)
    wanted = request.image_id
    found = wanted if wanted is not None and pinned_here(pins, here.client, wanted) else None
    if wanted is None and (named := local_image_id(here.client, request.reference)) is not None:
        found = named if pinned_here(pins, here.client, named) else None
    if found is not None:
        check_owned(here.connection, here.settings, found, request.reference)
        image_use.refresh_use(here.connection, here.settings, here.settings.host_id, found)
        return found
    location = hosts.locate_images(here.connection, here.settings, [request.reference])[0]
    if (
        location
        and location["host"] != here.settings.host_id
        and (wanted is None or location["image_id"] == wanted)
        and hosts.is_alive(here.connection, here.settings, location["host"])
    ):
        return Forward(location["host"], location["image_id"], "forwarded")
    if wanted is None and location is None:
        wanted = image_use.evicted_image(here.connection, here.settings, request.reference)  # removed by the disk budget
    if wanted is not None and (spec := rebuild.recall(here.connection, here.settings, wanted)) is not None:
        check_owned(here.connection, here.settings, wanted, request.reference)
        return spec  # its only copy died with its host or was evicted: built again here, by the same key
    if wanted is not None:
        raise PushError(
            f"Image {wanted} ({request.reference}) is no longer on host {here.settings.host_id} "
            "nor on any live host: build it again."
        )
    raise PushError(f"No image {request.reference} on host {here.settings.host_id} or on any live host.")


def _rebuild_pinned(spec: BuildSpec, request: PushRequest, pins: image_use.Pins, *, here: Here) -> str | Forward:
    """Build ``spec`` again and pin the image with the push's own ``pins``, or forward to its holder.

    ``execute_build`` releases its own pins when it returns, so the disk budget may claim the
    image before the push pins it: a pin refused (being evicted) or an image already removed
    is a miss, and the image is built again, ``REBUILD_ATTEMPTS`` times at most; never pushed.
    """
    for _attempt in range(REBUILD_ATTEMPTS):
        rebuilt = execute_build(spec, here=here)
        if isinstance(rebuilt, Forward):
            return rebuilt
        if pinned_here(pins, here.client, rebuilt["image_id"]):
            return rebuilt["image_id"]
        here.output(f"dockyard: the image rebuilt for {request.reference} was evicted before its push; building it again\n")
    raise PushError(
        f"The image rebuilt for {request.reference} on host {here.settings.host_id} was evicted "
        f"{REBUILD_ATTEMPTS} times before it could be pushed: try again later or give the host more disk."
    )


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
    here: Here,
) -> FarmPushResult | Forward:
    """Push once per (image, repository, tags, registry); forward to the holder if it is elsewhere.

    A cached push answers only while the registry still serves its digest under each tag. It pushes
    only an image the team had (``dockyard.tasks.teams.pushing``; the task checked the repository
    first); each push answered here is audited.
    """
    with image_use.Pins(here.connection, here.settings) as pins:
        outcome = _push_pinned(request, credentials, pins, here=here)
    if not isinstance(outcome, Forward):
        audit.record_push(here.connection, here.settings, outcome, login="farm" if credentials is None else "team")
    return outcome


def _push_pinned(
    request: PushRequest,
    credentials: Credentials | None,
    pins: image_use.Pins,
    *,
    here: Here,
) -> FarmPushResult | Forward:
    found = image_to_push(request, here=here, pins=pins)
    if isinstance(found, BuildSpec):
        rebuilt = _rebuild_pinned(found, request, pins, here=here)
        if isinstance(rebuilt, Forward):  # another live host holds it now
            return Forward(rebuilt.host, rebuilt.image_id, "forwarded")
        found = rebuilt
    if isinstance(found, Forward):
        return found
    pinned = request.model_copy(update={"image_id": found})
    cache_key = push_key(
        image_id=found, repository=request.image_name, tags=request.tags, registry=registry_of(request.image_name)
    )

    def compute() -> dict[str, Any]:
        with here.connection.lock(key(here.settings, "pushing", here.settings.host_id, request.image_name), timeout=here.settings.task_time_limit_s):
            if credentials is None:
                digest = push_in(pinned, None, client=here.client, settings=here.settings, output=here.output)
            else:
                with docker_client(here.settings) as private:  # a login stays in this call's own client
                    digest = push_in(pinned, credentials, client=private, settings=here.settings, output=here.output)
        return {"digest": digest}

    started = time.monotonic()
    outcome: Outcome = push_cache(here.connection, here.settings).run(
        cache_key, compute, valid=served_by_registry(request, credentials, here.settings), ignore_cache=request.ignore_cache,
    )
    if outcome.source == "built":
        metrics.count(here.connection, here.settings, "pushes_total")
        metrics.observe(here.connection, here.settings, "push_seconds", time.monotonic() - started)
    else:
        metrics.count(here.connection, here.settings, "push_cache_hits_total")
    return farm_push_result(request, outcome.value.get("digest"), host=here.settings.host_id, cache=outcome.source)
