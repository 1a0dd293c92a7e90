"""The Docker engine connection, logged in to the worker's registry.

Workers keep one client per process (``shared_client``): a new client asks
the engine for its API version first, which costs more than a cache hit.
"""

from __future__ import annotations

import contextlib
import os
import threading
import weakref
from collections.abc import Iterator

import docker

from dockyard.config.settings import Settings


def open_client(settings: Settings) -> docker.DockerClient:
    """A client for ``settings.docker_host`` (or Docker's own default), logged in if configured.

    The login is held in the client's memory only and sent with pulls and
    pushes; nothing is written to a Docker config file.
    """
    if settings.docker_host:
        client = docker.DockerClient(base_url=settings.docker_host, timeout=settings.task_time_limit_s)
    else:
        client = docker.from_env(timeout=settings.task_time_limit_s)
    if settings.registry_url and settings.registry_username and settings.registry_password:
        client.api._auth_configs.add_auth(  # in-memory only: no daemon round trip, no file
            settings.registry_url,
            {
                "username": settings.registry_username,
                "password": settings.registry_password.get_secret_value(),
                "serveraddress": settings.registry_url,
            },
        )
    return client


@contextlib.contextmanager
def docker_client(settings: Settings) -> Iterator[docker.DockerClient]:
    """``open_client`` that is closed on exit."""
    client = open_client(settings)
    try:
        yield client
    finally:
        client.close()


_shared: dict[tuple[int, str | None], docker.DockerClient] = {}
_shared_lock = threading.Lock()


def shared_client(settings: Settings) -> docker.DockerClient:
    """This process's client for ``settings.docker_host`` (a forked child makes its own)."""
    slot = (os.getpid(), settings.docker_host)
    with _shared_lock:
        client = _shared.get(slot)
        if client is None:
            client = _shared[slot] = open_client(settings)
        return client


_bridge_known: weakref.WeakKeyDictionary[docker.DockerClient, bool] = weakref.WeakKeyDictionary()


def default_build_network(client: docker.DockerClient) -> str | None:
    """The network to give classic-builder steps when the caller names none.

    On an engine without a ``bridge`` network the engine's default already
    gives a step only loopback, but it leaks one network sandbox per step,
    which the engine then cleans up one by one on its next start (minutes
    after a few thousand builds). Naming ``none`` gives the same network and
    no leak. An engine with a bridge keeps its default (``None``).
    """
    return None if engine_has_bridge(client) else "none"


def engine_has_bridge(client: docker.DockerClient) -> bool:
    """Whether the engine has a ``bridge`` network (asked once per client)."""
    has_bridge = _bridge_known.get(client)
    if has_bridge is None:
        found = client.api.networks(names=["bridge"])  # a name filter matches substrings
        has_bridge = _bridge_known[client] = any(net["Name"] == "bridge" for net in found)
    return has_bridge
