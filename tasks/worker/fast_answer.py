"""The fast lane's side of a build and a push: answer from the cache, or say it is not cheap.

A fast worker never builds nor pushes. ``answer_build`` answers a build
whose key (the bases' digests resolved now, through the registry only) has
an entry on this host: when the spec's tags are already recorded on this
image here, from Redis alone, as the caller's fast path does; otherwise it
applies the missing tags on the engine. ``answer_push`` answers a push the
push cache holds and the registry still serves. Each returns None when the
work is not cheap (a miss, another holder, an image gone, a real push): the
task then hands it to the build lanes.
"""

from __future__ import annotations

import time


from dockyard.tasks.registry import base_images
from dockyard.tasks.farm import hosts
from dockyard.tasks.farm import metrics
from dockyard.tasks.engine.build import apply_tags
from dockyard.tasks.cache.single_flight import build_cache, push_cache
from dockyard.tasks.request.cache_key import push_key
from dockyard.tasks.errors import BuildError
from dockyard.tasks.engine.images import image_exists, local_image_id
from dockyard.tasks.worker.holder import finish_on_holder
from dockyard.tasks.worker.push import served_by_registry
from dockyard.tasks.request.naming import registry_of
from dockyard.tasks.request.results import FarmBuildResult, FarmPushResult, farm_push_result
from dockyard.tasks.worker.here import Here
from dockyard.tasks.request.spec import BuildSpec, Credentials, PushRequest


def answer_build(
    spec: BuildSpec, *, here: Here,
    started: float | None = None,
) -> FarmBuildResult | None:
    """The build's result as a hit on this host, or None when it is not cheap here.

    ``started``: when the task began (``time.monotonic``; default now), for the hit's latency.
    """
    started = time.monotonic() if started is None else started
    if spec.ignore_cache:
        return None
    digests = base_images.resolve(spec, here.settings)  # the registry only: never a pull in the fast lane
    if digests is None:
        return None
    cache_key = base_images.cache_key(spec, digests)
    entry = build_cache(here.connection, here.settings).peek(cache_key)
    if entry is None or entry.host != here.settings.host_id:
        return None
    image_id = str(entry.value["image_id"])
    located_here = {"host": here.settings.host_id, "image_id": image_id}
    in_place = all(location == located_here for location in hosts.locate_images(here.connection, here.settings, spec.references))
    if not in_place:
        try:
            apply_tags(here.client, image_id, spec.image_name, spec.tags)
        except BuildError:
            return None  # the image vanished: the build lanes rebuild it
    metrics.count(here.connection, here.settings, "cache_hits_total")
    answer = finish_on_holder(
        spec, image_id, "hit", cache_key=cache_key, here=here,
        tags_in_place=True,
    )
    metrics.observe(here.connection, here.settings, "hit_seconds", time.monotonic() - started)
    return answer


def answer_push(
    request: PushRequest, credentials: Credentials | None, *, here: Here,
) -> FarmPushResult | None:
    """The push's result from the push cache (the registry still serves it), or None: a real push."""
    if request.ignore_cache:
        return None
    image_id = request.image_id if request.image_id is not None and image_exists(here.client, request.image_id) else None
    if request.image_id is None:
        image_id = local_image_id(here.client, request.reference)
    if image_id is None:
        return None
    cache_key = push_key(
        image_id=image_id, repository=request.image_name, tags=request.tags, registry=registry_of(request.image_name)
    )
    entry = push_cache(here.connection, here.settings).peek(cache_key)
    if entry is None or not served_by_registry(request, credentials, here.settings)(entry):
        return None
    metrics.count(here.connection, here.settings, "push_cache_hits_total")
    return farm_push_result(request, entry.value.get("digest"), host=here.settings.host_id, cache="hit")
