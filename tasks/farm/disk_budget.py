"""The disk budget of one host: remove its least recently used dockyard images while it is over.

dockyard's images on a host are the ones ``used:<host>`` keeps (``dockyard.tasks.farm.image_use``):
images dockyard built or answered from its cache on that host, never a base
image or an image made by anything else. Their total is their ``footprint``
(``dockyard.tasks.engine.disk_usage``): every layer they use that no other image of the
engine uses, counted once.

While the total is above ``disk_budget_bytes``, the least recently used
image goes, unless a running task pins it (then the next one):

1. it is claimed (atomically, only if no live pin: later pins fail);
2. its cache entries and image locations are dropped (``hosts.forget_image``),
   so no new hit answers it;
3. it is removed from the engine.

The build behind it (``dockyard.tasks.farm.rebuild``) is kept: a later request for its key
is a miss and builds again, and a push of its image id, or of a tag that
named it (``evicted:<name:tag>``), rebuilds it by the same key before pushing. One pass runs at a time per host (a Redis lock).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import docker
import docker.errors
import redis

from dockyard.config.settings import Settings
from dockyard.tasks.farm import hosts
from dockyard.tasks.farm import image_use
from dockyard.tasks.engine.disk_usage import ImageLayers, footprint, read_layers, top_level_images
from dockyard.tasks.keyspace import key

logger = logging.getLogger("dockyard.disk_budget")
PASS_LOCK_S = 600  # a pass that died leaves its lock this long at most


@dataclass
class Pass:
    """What one pass found and did: bytes counted before and after, against the budget."""

    budget: int
    before: int = 0
    after: int = 0
    evicted: list[str] = field(default_factory=list)
    pinned: list[str] = field(default_factory=list)  # over budget, but a running task needs them
    refused: list[str] = field(default_factory=list)  # the engine kept them (a child image, a running container)
    gone: list[str] = field(default_factory=list)  # kept as dockyard's but no longer on the engine


def least_recently_used(last_uses: Mapping[str, float]) -> list[str]:
    """Image ids, least recently used first (ties by id, so the order is stable)."""
    return sorted(last_uses, key=lambda image_id: (last_uses[image_id], image_id))


@dataclass
class HostImages:
    """The engine's images split into dockyard's (with their last use) and everything else."""

    ours: dict[str, ImageLayers]
    others: list[ImageLayers]
    last_uses: dict[str, float]
    gone: list[str]

    def total(self) -> int:
        return footprint(self.ours.values(), self.others)


def host_images(connection: redis.Redis, settings: Settings, client: docker.DockerClient, host_id: str) -> HostImages:
    """Read the host's images: dockyard's by ``used:<host>``, the rest of the engine's as others."""
    last_uses = image_use.last_uses(connection, settings, host_id)
    ours: dict[str, ImageLayers] = {}
    others: list[ImageLayers] = []
    for image_id in top_level_images(client):
        try:
            layers = read_layers(client, image_id)
        except docker.errors.ImageNotFound:
            continue  # removed while this pass read the engine
        if image_id in last_uses:
            ours[image_id] = layers
        else:
            others.append(layers)
    gone = [image_id for image_id in last_uses if image_id not in ours]
    return HostImages(ours, others, {image_id: last_uses[image_id] for image_id in ours}, gone)


def remove_from_engine(client: docker.DockerClient, image_id: str) -> bool:
    """Remove ``image_id`` and every tag it has; False if the engine refuses (a child image, a running container)."""
    try:
        client.api.remove_image(image_id, force=True)
    except docker.errors.ImageNotFound:
        return True
    except docker.errors.APIError as exc:
        if exc.status_code == 409:
            logger.warning("the engine keeps %s: %s", image_id, exc.explanation or exc)
            return False
        raise
    return True


def evict(connection: redis.Redis, settings: Settings, client: docker.DockerClient, host_id: str, image_id: str) -> str:
    """Remove one image the consistent way: ``evicted``, ``pinned`` (left alone) or ``refused`` (by the engine)."""
    if not image_use.claim_for_eviction(connection, settings, host_id, image_id):
        return "pinned"
    try:
        references = hosts.located_references(connection, settings, host_id=host_id, image_id=image_id)
        hosts.forget_image(connection, settings, host_id=host_id, image_id=image_id)  # no hit answers it from here on
        image_use.remember_evicted(connection, settings, references, image_id)
        return "evicted" if remove_from_engine(client, image_id) else "refused"
    finally:
        image_use.end_eviction(connection, settings, host_id, image_id)


def enforce(
    connection: redis.Redis, settings: Settings, client: docker.DockerClient, host_id: str | None = None
) -> Pass | None:
    """Bring ``host_id``'s dockyard images within the budget; None if another pass is running now."""
    host_id = host_id or settings.host_id
    lock = connection.lock(key(settings, "disk-budget", host_id), timeout=PASS_LOCK_S)
    if not lock.acquire(blocking=False):
        return None
    try:
        return _enforce(connection, settings, client, host_id)
    finally:
        try:
            lock.release()
        except redis.exceptions.LockError:
            pass  # expired during a very long pass


def _enforce(connection: redis.Redis, settings: Settings, client: docker.DockerClient, host_id: str) -> Pass:
    found = host_images(connection, settings, client, host_id)
    image_use.drop_use(connection, settings, host_id, found.gone)
    report = Pass(settings.disk_budget_bytes, gone=found.gone)
    report.before = report.after = found.total()
    if settings.disk_budget_bytes <= 0:
        return report  # no budget
    for image_id in least_recently_used(found.last_uses):
        if report.after <= settings.disk_budget_bytes:
            break
        outcome = evict(connection, settings, client, host_id, image_id)
        if outcome == "pinned":
            report.pinned.append(image_id)
            continue
        layers = found.ours.pop(image_id)
        if outcome == "refused":
            found.others.append(layers)  # still on the engine, no longer dockyard's to count or remove
            report.refused.append(image_id)
        else:
            report.evicted.append(image_id)
        report.after = found.total()
    if report.evicted or report.pinned or report.refused:
        logger.info(
            "disk budget of %s: %d bytes before, %d after, budget %d; evicted %d, pinned %d, refused %d",
            host_id, report.before, report.after, report.budget,
            len(report.evicted), len(report.pinned), len(report.refused),
        )
    return report
