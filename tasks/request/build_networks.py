"""The build network policy: which networks build steps may use (``DOCKYARD_BUILD_NETWORKS``), and the default one.

A request names a network with docker-py's ``network_mode`` or buildx's
``network``. The farm's setting ``build_networks`` lists the networks build
steps may use; its first entry is what a request naming none gets. Unset, the
default is the engine's own: ``none`` on an engine without a ``bridge``
network (the local farm's), else ``bridge`` (what a ``RUN pip install``
needs). ``none`` (loopback only) is always allowed; ``host`` also when
``allow_host_network`` is set. Any other name (``bridge`` where it is not
the default, a compose project network, ``container:<id>``) is refused, and
the error names the setting.

The caller does not know the engine: with the setting unset it lets
``bridge`` through, and the worker, which knows its engine, decides
(``dockyard.tasks.engine.build_network``). Pure: no engine, no Redis.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dockyard.config.settings import Settings

NONE = "none"  # loopback only: always allowed
HOST = "host"  # the build host's own network: also allowed by allow_host_network
BRIDGE = "bridge"  # the engine's default network, where it has one
ALIASES = {"default": BRIDGE}  # buildx's (and Docker's) name of the engine's default network
NETWORK_OPTIONS = {"docker-py": "network_mode", "buildx": "network"}  # the option each backend names a network with


def canonical(name: str) -> str:
    """One name per network: buildx's ``default`` is Docker's ``bridge``."""
    name = name.strip()
    return ALIASES.get(name, name)


def backend_name(network: str, backend: str) -> str:
    """How ``backend`` spells ``network``: buildx calls the engine's default network ``default``."""
    return "default" if backend == "buildx" and network == BRIDGE else network


@dataclass(frozen=True)
class NetworkPolicy:
    """The networks build steps may use on one engine (``allowed``) and what a request naming none gets."""

    allowed: frozenset[str]
    default: str | None  # None: not known here (a caller, with the setting unset)
    configured: bool  # from DOCKYARD_BUILD_NETWORKS (else the engine's default)

    def describe(self) -> str:
        """The allowed networks, for an error message."""
        return ", ".join(sorted(self.allowed))


def network_policy(settings: Settings, *, engine_has_bridge: bool | None) -> NetworkPolicy:
    """The policy under ``settings`` for an engine with or without a bridge (None: unknown, a caller's view)."""
    configured = [canonical(name) for name in settings.build_networks if name.strip()]
    extra = {HOST} if settings.allow_host_network else set()
    if configured:
        return NetworkPolicy(frozenset({NONE, *configured, *extra}), configured[0], configured=True)
    if engine_has_bridge is None:
        return NetworkPolicy(frozenset({NONE, BRIDGE, *extra}), None, configured=False)
    default = BRIDGE if engine_has_bridge else NONE
    return NetworkPolicy(frozenset({NONE, default, *extra}), default, configured=False)


def requested_network(build_kwargs: Mapping[str, Any], backend: str) -> str | None:
    """The network a request names (canonical), or None when it names none."""
    value = build_kwargs.get(NETWORK_OPTIONS.get(backend, "network_mode"))
    if value is None or value == "":
        return None
    return canonical(str(value))


def network_refusal(build_kwargs: Mapping[str, Any], backend: str, policy: NetworkPolicy) -> str | None:
    """Why the request's network is refused under ``policy``, or None if it may use it."""
    option = NETWORK_OPTIONS.get(backend, "network_mode")
    network = requested_network(build_kwargs, backend)
    if network is None or network in policy.allowed:
        return None
    given = build_kwargs[option]
    if network == HOST:
        return (
            f"Build option {option}={given!r} reaches the build host; it is refused unless the farm sets "
            f"DOCKYARD_ALLOW_HOST_NETWORK=true or lists it in DOCKYARD_BUILD_NETWORKS (allowed here: {policy.describe()})."
        )
    return (
        f"Build option {option}={given!r} names a network build steps may not use; it is refused unless the farm "
        f"lists it in DOCKYARD_BUILD_NETWORKS (allowed here: {policy.describe()})."
    )


def chosen_network(build_kwargs: Mapping[str, Any], backend: str, policy: NetworkPolicy) -> str | None:
    """The network the build's steps get, as the backend spells it: the request's if allowed, else the default.

    Call ``network_refusal`` first; this does not check. None: the policy does not know (a caller).
    """
    network = requested_network(build_kwargs, backend) or policy.default
    return None if network is None else backend_name(network, backend)
