"""The host a worker call runs on: its settings, its Redis, its engine client and where output goes."""

from __future__ import annotations

from dataclasses import dataclass

import docker
import redis

from dockyard.config.settings import Settings
from dockyard.tasks.output import OutputSink


@dataclass(frozen=True)
class Here:
    """What every worker call on this host needs, passed as one."""

    settings: Settings
    connection: redis.Redis
    client: docker.DockerClient
    output: OutputSink
