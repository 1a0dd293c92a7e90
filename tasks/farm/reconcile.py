"""Reconciliation at worker start: forget the images this host is recorded as holding but its engine lost.

The deletion watcher (``dockyard.workers.heartbeat.watch_deletions``) only sees images
deleted while it runs. An image removed while its worker was down (a prune, a
``docker rmi``) keeps its ``byimage:<host>:<image id>`` index, its ``image:``
locations and its cache entries, and the caller's fast path would answer them
as hits. ``reconcile`` checks every recorded image against the engine and
drops the records of those that are gone (``dockyard.tasks.farm.hosts.forget_image``). The
worker runs it before it takes work and before it heartbeats.
"""

from __future__ import annotations

from dataclasses import dataclass

import docker
import redis

from dockyard.config.settings import Settings
from dockyard.tasks.farm import hosts
from dockyard.tasks.engine.images import image_exists


@dataclass(frozen=True)
class Reconciled:
    """What one reconciliation found: images checked, those gone, and the Redis keys dropped for them."""

    checked: int
    gone: tuple[str, ...]
    dropped: int


def reconcile(connection: redis.Redis, settings: Settings, client: docker.DockerClient, host_id: str) -> Reconciled:
    """Drop the records of every image ``host_id`` is recorded as holding that ``client``'s engine lacks.

    Engine and Redis errors propagate: the host is then not reconciled, and must not be advertised.
    """
    recorded = hosts.recorded_images(connection, settings, host_id)
    gone = tuple(image_id for image_id in recorded if not image_exists(client, image_id))
    dropped = sum(hosts.forget_image(connection, settings, host_id=host_id, image_id=image_id) for image_id in gone)
    return Reconciled(checked=len(recorded), gone=gone, dropped=dropped)
