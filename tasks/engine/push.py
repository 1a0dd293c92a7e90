"""The push operation on one engine: a validated request and credentials in clear in, the tag's digest out.

It stops at the first error. Arguments are validated before they get here
(``dockyard.tasks.request.arguments``).
"""

from __future__ import annotations

from typing import Any

import docker
import docker.errors
import requests.exceptions

from dockyard.config.settings import Settings
from dockyard.tasks.engine.buildx import buildx_push
from dockyard.tasks.errors import PushError, RegistryUnavailable, engine_error
from dockyard.tasks.output import OutputSink
from dockyard.tasks.request.naming import registry_of
from dockyard.tasks.request.spec import Credentials, PushRequest


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
