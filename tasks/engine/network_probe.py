"""The start-up probe of the build network: one RUN step on the default build network tries to reach the farm.

The step (classic builder, ``FROM build_network_probe_image``, by default
``auto_base_image``) tries a TCP connection, with a short timeout, to each of
the farm's own addresses: the Redis of broker, results and cache (or their
sentinels), the context store, and this worker's ``/metrics``. It prints one
line per address, then fails on purpose, so no image is left behind. A step
that can connect to any of them means build steps on this host can reach the
farm. ``nc`` (busybox's or another) or ``python3`` in the image does the
connecting; without either the probe reports that it could not test.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import docker
import docker.errors

from dockyard.config.redis_urls import is_sentinel_url, parse_sentinel_url
from dockyard.config.settings import Settings
from dockyard.tasks.engine.build_network import apply_build_network

CONNECT_TIMEOUT_S = 1  # each connection attempt of the probe step gives up after this
MARK = "dockyard-probe"  # the probe step's lines start with this
PROBE_LABEL = "dockyard.probe"  # on the probe's step containers (their create events carry it), so they are told from builds
DONE_EXIT = 86  # the probe step's exit code: it always fails, so the engine keeps no image
WILDCARDS = ("0.0.0.0", "::", "")  # a bind address on every interface: probed on loopback


@dataclass(frozen=True)
class ProbeResult:
    """What the probe step reached: ``reached`` of ``probed`` (host:port), on ``network``; ``error`` if it could not run."""

    network: str | None
    probed: list[str]
    reached: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def reaches_farm(self) -> bool | None:
        """True if the step reached any farm address, False if none, None if the probe did not run."""
        return None if self.error is not None else bool(self.reached)

    def record(self) -> dict[str, Any]:
        """The host record's ``build_network`` field (read by ``dockyard doctor`` and ``/metrics``)."""
        return {
            "network": self.network, "probed": self.probed, "reached": self.reached,
            "reaches_farm": self.reaches_farm, "error": self.error,
        }


def url_addresses(url: str) -> list[str]:
    """The host:port addresses a Redis URL connects to (a Sentinel URL: its sentinels; ``unix://``: none)."""
    if is_sentinel_url(url):
        return [f"{host}:{port}" for host, port in parse_sentinel_url(url).sentinels]
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        return []
    return [f"{parts.hostname}:{parts.port or 6379}"]


def farm_addresses(settings: Settings, metrics: tuple[str, int] | None) -> list[str]:
    """The farm's addresses a build step must not reach, each once, in order."""
    found: list[str] = []
    for url in (settings.effective_broker_url, settings.effective_result_backend, settings.effective_cache_url,
                settings.context_store_url):
        found.extend(url_addresses(url))
    if metrics is not None:
        host, port = metrics
        found.append(f"{'127.0.0.1' if host in WILDCARDS else host}:{port}")
    return list(dict.fromkeys(found))


def split_address(address: str) -> tuple[str, str]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), port


def probe_dockerfile(image: str, addresses: Iterable[str]) -> str:
    """The probe's Dockerfile: one RUN step, each address tried in parallel, one line each, then exit DONE_EXIT."""
    tries = " ".join(f"try {host} {port} &" for host, port in map(split_address, addresses))
    script = (
        f"try() {{ if [ -n \"$tool\" ] && $tool \"$1\" \"$2\"; then echo \"{MARK} reached $1:$2\"; "
        f"else echo \"{MARK} missed $1:$2\"; fi; }}; "
        f"viaNc() {{ nc -w {CONNECT_TIMEOUT_S} \"$1\" \"$2\" -e true </dev/null >/dev/null 2>&1 "
        f"|| nc -z -w {CONNECT_TIMEOUT_S} \"$1\" \"$2\" </dev/null >/dev/null 2>&1; }}; "
        f"viaPython() {{ python3 -c 'import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), "
        f"{CONNECT_TIMEOUT_S})' \"$1\" \"$2\" >/dev/null 2>&1; }}; "
        "tool=; nc -h >/dev/null 2>&1; [ $? -ne 127 ] && tool=viaNc; "
        "[ -z \"$tool\" ] && python3 -c '' >/dev/null 2>&1 && tool=viaPython; "
        f"[ -z \"$tool\" ] && echo \"{MARK} no-tool\"; "
        f"{tries} wait; exit {DONE_EXIT}"
    )
    return f"FROM {image}\nLABEL {PROBE_LABEL}=build-network\nRUN {script}\n"


def parse_probe_output(lines: Iterable[str], probed: list[str], network: str | None) -> ProbeResult:
    """The probe's result from the step's output lines."""
    reached: list[str] = []
    seen: set[str] = set()
    no_tool = False
    for line in lines:
        words = line.strip().split()
        if len(words) < 2 or words[0] != MARK:
            continue
        if words[1] == "no-tool":
            no_tool = True
        elif words[1] in ("reached", "missed") and len(words) == 3:
            seen.add(words[2])
            if words[1] == "reached":
                reached.append(words[2])
    if no_tool:
        return ProbeResult(network, probed, error="the probe image has neither nc nor python3 (DOCKYARD_BUILD_NETWORK_PROBE_IMAGE)")
    missing = [address for address in probed if address not in seen]
    if missing:
        return ProbeResult(network, probed, reached=sorted(reached), error=f"the probe step said nothing of {', '.join(missing)}")
    return ProbeResult(network, probed, reached=sorted(reached))


def run_probe(client: docker.DockerClient, settings: Settings, addresses: list[str]) -> ProbeResult:
    """Run the probe step on ``client`` with the default build network of ``settings``."""
    kwargs: dict[str, Any] = {}
    try:
        network = apply_build_network(client, settings, "docker-py", kwargs)
    except Exception as exc:  # noqa: BLE001 - an engine that does not answer: the probe did not run
        return ProbeResult(None, addresses, error=f"no build network: {exc}")
    if not addresses:
        return ProbeResult(network, addresses)
    image = settings.build_network_probe_image or settings.auto_base_image
    dockerfile = probe_dockerfile(image, addresses).encode()
    lines: list[str] = []
    try:
        for event in client.api.build(
            fileobj=io.BytesIO(dockerfile), rm=True, forcerm=True, nocache=True, pull=False, decode=True, **kwargs,
        ):
            if isinstance(event, dict) and isinstance(event.get("stream"), str):
                lines.extend(event["stream"].splitlines())
            elif isinstance(event, dict) and event.get("error") and str(DONE_EXIT) not in str(event["error"]):
                return ProbeResult(network, addresses, error=f"the probe build failed: {event['error']}")
    except docker.errors.DockerException as exc:
        return ProbeResult(network, addresses, error=f"the probe build failed: {exc}")
    return parse_probe_output(lines, addresses, network)
