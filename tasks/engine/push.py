"""``push_docker_image``: prefect-docker's push step, and the push operation under it.

``push_docker_image`` and ``push_image`` validate their arguments with
``PushRequest`` (the farm's one validator); ``push_in`` is the operation
itself: a validated request with credentials in clear and an engine client
in, the first tag's digest out. It stops at the first error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import docker
import docker.errors
import requests.exceptions

from dockyard.config.settings import Settings, get_settings
from dockyard.tasks.engine.build import OutputSink, write_stdout
from dockyard.tasks.engine.buildx import buildx_push
from dockyard.tasks.engine.connection import docker_client
from dockyard.tasks.errors import InvalidInput, PushError, RegistryUnavailable, engine_error
from dockyard.tasks.request.naming import qualify_image_name, registry_of
from dockyard.tasks.request.results import PushDockerImageResult, push_result
from dockyard.tasks.request.spec import Credentials, PushRequest


def push_docker_image(
    image_name: str,
    tag: str | None = None,
    credentials: dict[str, Any] | None = None,
    additional_tags: list[str] | None = None,
    ignore_cache: bool = False,
    build_backend: str = "docker-py",
) -> PushDockerImageResult:
    """Push an image from this host's engine, with prefect-docker's signature and result."""
    del ignore_cache  # caching is the caller's concern (see dockyard.tasks.cache.single_flight)
    return push_image(
        image_name, tag=tag, credentials=credentials, additional_tags=additional_tags,
        build_backend=build_backend, settings=get_settings(),
    )


def push_request(
    image_name: str,
    *,
    settings: Settings,
    tag: str | None = None,
    credentials: Mapping[str, Any] | None = None,
    additional_tags: list[str] | None = None,
    ignore_cache: bool = False,
    build_backend: str = "docker-py",
    image_id: str | None = None,
) -> PushRequest:
    """prefect-docker's push arguments as a validated ``PushRequest`` (name qualified)."""
    if credentials is not None and not isinstance(credentials, Mapping):
        raise InvalidInput("credentials must be a mapping with username, password and registry_url.")
    return PushRequest.parse({
        "image_name": qualify_image_name(image_name, settings.default_namespace),
        "tag": tag,
        "additional_tags": [] if additional_tags is None else additional_tags,
        "credentials": dict(credentials) if credentials is not None else None,
        "ignore_cache": ignore_cache,
        "build_backend": build_backend,
        "image_id": image_id,
    })


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
    """Validate prefect-docker's arguments and push from one engine. Returns the tag's ``digest``."""
    request = push_request(
        image_name, settings=settings, tag=tag, credentials=credentials,
        additional_tags=additional_tags, build_backend=build_backend,
    )
    opened = request.credentials if isinstance(request.credentials, Credentials) else None
    if request.credentials is not None and opened is None:
        raise InvalidInput("Sealed credentials are opened by a worker, not by a local push.")
    if client is None:
        with docker_client(settings) as owned:
            digest = push_in(request, opened, client=owned, settings=settings, output=output)
    else:
        digest = push_in(request, opened, client=client, settings=settings, output=output)
    return push_result(request, digest)


def push_in(
    request: PushRequest,
    credentials: Credentials | None,
    *,
    client: docker.DockerClient,
    settings: Settings,
    output: OutputSink,
) -> str | None:
    """Push the request's tag and each additional tag from ``client``'s engine; the tag's digest."""
    tags: list[str | None] = list(request.tags)  # tag=None pushes "latest": exactly what the push key names
    if request.image_id is not None:
        point_tags(client, request.image_id, request.image_name, request.tags)
    registry = (credentials.registry_url if credentials else None) or registry_of(request.image_name)
    if request.build_backend == "buildx":
        return buildx_push(
            settings, image_name=request.image_name, tags=tags,
            credentials=_login_fields(credentials, registry) if credentials else None, output=output,
        )
    if credentials is not None:
        _login(client, credentials, registry)
    digests = [_push_one(client, request.image_name, each, output) for each in tags]
    return digests[0]


def point_tags(client: docker.DockerClient, image_id: str, image_name: str, tags: list[str]) -> None:
    """Make each ``image_name:tag`` on this engine name ``image_id``, whatever it named before."""
    try:
        image = client.images.get(image_id)
    except docker.errors.ImageNotFound as exc:
        raise PushError(f"Image {image_id} ({image_name}) is no longer on this host; build it again.") from exc
    except docker.errors.APIError as exc:
        raise engine_error(str(exc.explanation or exc), doing=f"looking up {image_id}") from exc
    for tag in tags:
        image.tag(image_name, tag)


def _login_fields(credentials: Credentials, registry: str | None) -> dict[str, Any]:
    return {"username": credentials.username, "password": credentials.password, "registry_url": registry}


def _login(client: docker.DockerClient, credentials: Credentials, registry: str | None) -> None:
    try:
        client.login(
            username=credentials.username, password=credentials.password,
            registry=registry, reauth=credentials.reauth,
        )
    except docker.errors.APIError as exc:
        raise engine_error(str(exc.explanation or exc), doing=f"login to {registry}") from exc


def _push_one(client: docker.DockerClient, image_name: str, tag: str | None, output: OutputSink) -> str | None:
    """Push one tag; raise at the first error event; return the pushed digest."""
    digest: str | None = None
    try:
        for event in client.api.push(repository=image_name, tag=tag, stream=True, decode=True):
            if "error" in event:
                raise engine_error(str(event["error"]), doing=f"pushing {image_name}:{tag}")
            if "status" in event:
                output(event["status"] + (" " + event["progress"] if "progress" in event else "") + "\n")
            aux = event.get("aux")
            if isinstance(aux, dict) and aux.get("Digest"):
                digest = aux["Digest"]
    except docker.errors.ImageNotFound as exc:
        raise PushError(f"No image {image_name}:{tag} on this host to push.") from exc
    except docker.errors.APIError as exc:
        raise engine_error(str(exc.explanation or exc), doing=f"pushing {image_name}:{tag}") from exc
    except requests.exceptions.ConnectionError as exc:
        raise RegistryUnavailable(f"Docker engine unreachable while pushing: {exc}") from exc
    return digest
