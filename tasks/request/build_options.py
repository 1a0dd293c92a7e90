"""Which build options a request may carry: known ones only, and none that reaches the host unless allowed.

Each backend has an allow-list of options (prefect-docker's ``build_kwargs``
for docker-py's ``api.build``, python-on-whales' ``buildx.build``). Options
that reach the build host (its network, its disk, its builders, its ssh
agent, buildx entitlements) are refused unless a farm setting allows them;
the error names the option and the setting. The network a request names is
checked against the farm's build network policy
(``dockyard.tasks.request.build_networks``, ``DOCKYARD_BUILD_NETWORKS``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from dockyard.config.settings import Settings
from dockyard.tasks.request.build_networks import NETWORK_OPTIONS, NetworkPolicy, network_policy, network_refusal

# docker-py ``APIClient.build`` options a caller may give (path, tag, file objects and
# encodings are dockyard's own business and are refused)
DOCKER_PY_OPTIONS = frozenset({
    "path", "quiet", "nocache", "rm", "timeout", "pull", "forcerm", "container_limits", "buildargs",
    "shmsize", "labels", "cache_from", "target", "network_mode", "squash", "extra_hosts", "platform",
    "isolation", "use_config_proxy",
})
# python-on-whales ``buildx.build`` options a caller may give (prefect-docker's aliases included)
BUILDX_OPTIONS = frozenset({
    "path", "add_hosts", "allow", "attest", "build_args", "buildargs", "build_contexts", "builder", "cache",
    "cache_from", "cache_to", "labels", "load", "network", "output", "platforms", "platform", "provenance",
    "pull", "push", "sbom", "secrets", "ssh", "target",
})
# option -> the setting that allows its host-reaching uses
HOST_SETTINGS = {
    "network_mode": "allow_host_network",
    "network": "allow_host_network",
    "output": "allow_local_build_io",
    "cache_to": "allow_local_build_io",
    "cache_from": "allow_local_build_io",
    "build_contexts": "allow_local_build_io",
    "allow": "allow_buildx_entitlements",
    "builder": "allow_buildx_builder",
    "ssh": "allow_ssh_agent",
}
REMOTE_SCHEMES = ("docker-image://", "https://", "http://", "git@", "oci-layout://", "target:")


def unknown_options(build_kwargs: Mapping[str, Any], backend: str) -> list[str]:
    """The options the backend's allow-list does not know."""
    known = BUILDX_OPTIONS if backend == "buildx" else DOCKER_PY_OPTIONS
    return sorted(set(build_kwargs) - known)


def _entries(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _is_local_io(value: Any) -> bool:
    """A buildx output or cache that is written to or read from the host's disk."""
    for entry in _entries(value):
        if isinstance(entry, Mapping):
            fields = {str(name): str(field) for name, field in entry.items()}
            kind = fields.get("type", "local")
        else:
            text = str(entry)
            fields = dict(part.split("=", 1) for part in text.split(",") if "=" in part)
            kind = fields.get("type", "local" if "=" not in text or "dest" in fields or "src" in fields else "")
        if kind in ("local", "tar", "") or (kind in ("oci", "docker") and "dest" in fields):
            return True
    return False


def _reaches_host(option: str, value: Any, backend: str) -> bool:
    if value is None or value is False or value == [] or value == {}:
        return False
    if option in ("network_mode", "network"):
        return str(value) == "host"
    if option in ("output", "cache_to", "cache_from"):
        return backend == "buildx" and _is_local_io(value)
    if option == "build_contexts":
        values = value.values() if isinstance(value, Mapping) else [value]
        return any(not str(each).startswith(REMOTE_SCHEMES) for each in values)
    return True  # allow, builder, ssh: any use reaches the host


def host_reaching(build_kwargs: Mapping[str, Any], backend: str) -> Iterator[tuple[str, str]]:
    """(option, setting) for each given option that reaches the host."""
    for option, setting in HOST_SETTINGS.items():
        if option in build_kwargs and _reaches_host(option, build_kwargs[option], backend):
            yield option, setting


def refused_option(
    build_kwargs: Mapping[str, Any], backend: str, settings: Settings, *, networks: NetworkPolicy | None = None,
) -> str | None:
    """Why a host-reaching option, or the network named, is refused under ``settings``; None if all is allowed.

    ``networks``: the build network policy of the engine (a worker's); default the caller's view, which
    does not know whether the engine has a bridge.
    """
    policy = networks if networks is not None else network_policy(settings, engine_has_bridge=None)
    if (reason := network_refusal(build_kwargs, backend, policy)) is not None:
        return reason
    for option, setting in host_reaching(build_kwargs, backend):
        if option == NETWORK_OPTIONS.get(backend, "network_mode"):
            continue  # the network policy decided it
        if not getattr(settings, setting):
            return (
                f"Build option {option}={build_kwargs[option]!r} reaches the build host; it is refused "
                f"unless the farm sets DOCKYARD_{setting.upper()}=true."
            )
    return None
