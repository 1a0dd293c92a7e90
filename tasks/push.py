"""``push_docker_image``: prefect-docker's push step, stopping at the first error."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import docker
import docker.errors
import requests.exceptions

from config.settings import Settings, get_settings
from tasks.build import BUILD_BACKENDS, OutputSink, write_stdout
from tasks.buildx import buildx_push
from tasks.engine import docker_client
from tasks.errors import InvalidInput, PushError, RegistryAuthError, RegistryUnavailable
from tasks.naming import qualify_image_name, registry_of, validate_tag
from tasks.results import PushDockerImageResult

CREDENTIAL_KEYS = frozenset({"username", "password", "registry_url", "reauth"})
_UNAVAILABLE_MARKERS = (
    "connection refused", "no such host", "i/o timeout", "timeout", "connection reset",
    "502", "503", "504", "500 internal", "tls handshake", "context deadline exceeded",
    "eof",
)


def push_docker_image(
    image_name: str,
    tag: str | None = None,
    credentials: dict[str, Any] | None = None,
    additional_tags: list[str] | None = None,
    ignore_cache: bool = False,
    build_backend: str = "docker-py",
) -> PushDockerImageResult:
    """Push an image from this host's engine, with prefect-docker's signature and result."""
    del ignore_cache  # caching is the caller's concern (see tasks.cache)
    return push_image(
        image_name, tag=tag, credentials=credentials, additional_tags=additional_tags,
        build_backend=build_backend, settings=get_settings(),
    )


def push_image(
    image_name: str,
    *,
    tag: str | None = None,
    credentials: Mapping[str, Any] | None = None,
    additional_tags: list[str] | None = None,
    build_backend: str = "docker-py",
    settings: Settings,
    client: docker.DockerClient | None = None,
    output: OutputSink = write_stdout,
) -> PushDockerImageResult:
    """The push with its I/O injected. Returns the digest of ``tag`` as ``digest``."""
    image_name = qualify_image_name(image_name, settings.default_namespace)
    if build_backend not in BUILD_BACKENDS:
        raise InvalidInput(
            f"Invalid build_backend {build_backend!r}. Expected 'docker-py' or 'buildx'."
        )
    validate_credentials(credentials)
    for each in [*([tag] if tag else []), *(additional_tags or [])]:
        validate_tag(each)
    if client is None:
        with docker_client(settings) as owned:
            return push_image(
                image_name, tag=tag, credentials=credentials, additional_tags=additional_tags,
                build_backend=build_backend, settings=settings, client=owned, output=output,
            )

    if build_backend == "buildx":
        with_registry = dict(credentials) if credentials is not None else None
        if with_registry is not None:
            with_registry.setdefault("registry_url", registry_of(image_name))
        digest = buildx_push(
            settings, image_name=image_name, tags=[tag, *(additional_tags or [])],
            credentials=with_registry, output=output,
        )
        return {
            "image_name": image_name, "tag": tag, "image": f"{image_name}:{tag}",
            "additional_tags": list(additional_tags or []), "digest": digest,
        }
    if credentials is not None:
        _login(client, credentials, default_registry=registry_of(image_name))
    digests = {each: _push_one(client, image_name, each, output) for each in [tag, *(additional_tags or [])]}
    return {
        "image_name": image_name,
        "tag": tag,
        "image": f"{image_name}:{tag}",
        "additional_tags": list(additional_tags or []),
        "digest": digests[tag],
    }


def validate_credentials(credentials: Mapping[str, Any] | None) -> None:
    """Credentials are a mapping of the reference's keys with string user and password."""
    if credentials is None:
        return
    if not isinstance(credentials, Mapping):
        raise InvalidInput("credentials must be a mapping with username, password and registry_url.")
    unknown = set(credentials) - CREDENTIAL_KEYS
    if unknown:
        raise InvalidInput(f"Unknown credentials keys: {sorted(unknown)}.")
    for key in ("username", "password"):
        if not isinstance(credentials.get(key), str) or not credentials.get(key):
            raise InvalidInput(f"credentials[{key!r}] must be a non-empty string.")


def _login(client: docker.DockerClient, credentials: Mapping[str, Any], default_registry: str | None) -> None:
    registry = credentials.get("registry_url") or default_registry
    try:
        client.login(
            username=credentials["username"], password=credentials["password"],
            registry=registry, reauth=credentials.get("reauth", True),
        )
    except docker.errors.APIError as exc:
        message = str(exc.explanation or exc)
        if _looks_unavailable(message) and "unauthorized" not in message.lower():
            raise RegistryUnavailable(f"Registry {registry} unreachable: {message}") from exc
        raise RegistryAuthError(f"Login to {registry} failed: {message}") from exc


def _push_one(client: docker.DockerClient, image_name: str, tag: str | None, output: OutputSink) -> str | None:
    """Push one tag; raise at the first error event; return the pushed digest."""
    digest: str | None = None
    try:
        for event in client.api.push(repository=image_name, tag=tag, stream=True, decode=True):
            if "error" in event:
                message = str(event["error"])
                if _looks_unavailable(message):
                    raise RegistryUnavailable(f"Pushing {image_name}:{tag} failed: {message}")
                raise PushError(f"Pushing {image_name}:{tag} failed: {message}")
            if "status" in event:
                output(event["status"] + (" " + event["progress"] if "progress" in event else "") + "\n")
            aux = event.get("aux")
            if isinstance(aux, dict) and aux.get("Digest"):
                digest = aux["Digest"]
    except docker.errors.ImageNotFound as exc:
        raise PushError(f"No image {image_name}:{tag} on this host to push.") from exc
    except docker.errors.APIError as exc:
        raise PushError(f"Pushing {image_name}:{tag} failed: {exc.explanation or exc}") from exc
    except requests.exceptions.ConnectionError as exc:
        raise RegistryUnavailable(f"Docker engine unreachable while pushing: {exc}") from exc
    return digest


def _looks_unavailable(message: str) -> bool:
    lowered = message.lower()
    return any(marker in lowered for marker in _UNAVAILABLE_MARKERS)
