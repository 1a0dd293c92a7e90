"""The host that holds an image: ``Forward`` work to it, and answer there (tags applied, locations recorded)."""

from __future__ import annotations

from dataclasses import dataclass

import docker

from dockyard.tasks.cache.notify import announce
from dockyard.tasks.cache.single_flight import build_cache
from dockyard.tasks.engine.build import apply_tags
from dockyard.tasks.engine.images import image_exists
from dockyard.tasks.farm import hosts, image_use, rebuild
from dockyard.tasks.request.results import FarmBuildResult, cache_source, farm_build_result
from dockyard.tasks.worker.here import Here
from dockyard.tasks.request.spec import BuildSpec
from dockyard.tasks.routing import fast_lane


@dataclass(frozen=True)
class Forward:
    """The work belongs on ``host``: send it to that host's queue."""

    host: str
    image_id: str
    source: str
    cache_key: str | None = None  # the build's cache key, which the holder checks against its entry


def pinned_here(pins: image_use.Pins, client: docker.DockerClient, image_id: str) -> bool:
    """``image_id`` is on this host and stays for this task: pinned first (the disk budget then
    leaves it), then looked up. False if it is gone or being evicted."""
    return pins.pin(image_id) and image_exists(client, image_id)


def finish_on_holder(
    spec: BuildSpec,
    image_id: str,
    source: str,
    *,
    cache_key: str,
    here: Here,
    tags_in_place: bool = False,
) -> FarmBuildResult:
    """On the host holding ``image_id``: apply the spec's tags (unless ``tags_in_place``), record where they are
    and its last use."""
    if source != "built" and not tags_in_place:
        apply_tags(here.client, image_id, spec.image_name, [spec.tag, *spec.additional_tags])
    hosts.record_image(
        here.connection, here.settings, host_id=here.settings.host_id, image_id=image_id, references=spec.references,
        cache_keys=[build_cache(here.connection, here.settings).entry_key(cache_key)], used=True,
    )
    rebuild.remember(here.connection, here.settings, spec, cache_key, image_id)
    fast_lane.remember_key(here.connection, here.settings, spec, cache_key)
    announce(here.connection, here.settings, "build", cache_key, "answered")  # its callers wake (dockyard.tasks.client)
    return farm_build_result(spec, image_id, host=here.settings.host_id, cache=cache_source(source))
