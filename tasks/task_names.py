"""The Celery task names: stable, so any program can send them by name without importing dockyard."""

from __future__ import annotations

BUILD_TASK = "dockyard.build_docker_image"  # prefect-docker's build arguments, or a prepared ``spec``
PUSH_TASK = "dockyard.push_docker_image"  # a build result first in a chain, then push's arguments
TAG_TASK = "dockyard.tag_image"  # internal: tags a cached image on the host that holds it
PING_TASK = "dockyard.ping"  # a trivial task: the round trip of the farm's queues
