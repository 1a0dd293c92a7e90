"""The network a build's steps get on this engine: the request's if the farm's policy allows it, else the default.

The policy is ``dockyard.tasks.request.build_networks`` with what only the
engine knows (whether it has a ``bridge`` network). Both backends, every
build path (``dockyard.tasks.engine.build``) and the worker's early check of a
request (``dockyard.tasks.celery_tasks``) go through here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import docker

from dockyard.config.settings import Settings
from dockyard.tasks.engine.connection import engine_has_bridge
from dockyard.tasks.errors import InvalidInput
from dockyard.tasks.request.build_networks import NETWORK_OPTIONS, NetworkPolicy, chosen_network, network_policy, network_refusal


def engine_policy(client: docker.DockerClient, settings: Settings) -> NetworkPolicy:
    """The build network policy of ``settings`` on this engine."""
    configured = any(name.strip() for name in settings.build_networks)
    return network_policy(settings, engine_has_bridge=None if configured else engine_has_bridge(client))


def apply_build_network(
    client: docker.DockerClient, settings: Settings, backend: str, kwargs: dict[str, Any],
) -> str | None:
    """Set the backend's network option in ``kwargs`` to the network the steps get; return it.

    ``InvalidInput`` naming ``DOCKYARD_BUILD_NETWORKS`` if the request names a network the policy refuses.
    """
    policy = engine_policy(client, settings)
    check_network(kwargs, backend, policy)
    network = chosen_network(kwargs, backend, policy)
    if network is not None:
        kwargs[NETWORK_OPTIONS.get(backend, "network_mode")] = network
    return network


def check_network(build_kwargs: Mapping[str, Any], backend: str, policy: NetworkPolicy) -> None:
    """``InvalidInput`` if the request's network is refused under ``policy``."""
    if (reason := network_refusal(build_kwargs, backend, policy)) is not None:
        raise InvalidInput(reason)
