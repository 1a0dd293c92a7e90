"""Images on one engine: is an image here, what a tag names, what a base's digest is."""

from __future__ import annotations

from collections.abc import Mapping

import docker
import docker.errors

from dockyard.tasks.request.naming import split_reference


def image_exists(client: docker.DockerClient, image_id: str) -> bool:
    try:
        client.images.get(image_id)
    except docker.errors.ImageNotFound:
        return False
    return True


def local_image_id(client: docker.DockerClient, reference: str) -> str | None:
    try:
        return str(client.images.get(reference).id)
    except docker.errors.ImageNotFound:
        return None


def engine_digest(reference: str, client: docker.DockerClient) -> str | None:
    """The digest ``reference`` has on this engine after pulling it, or None."""
    name, tag = split_reference(reference)
    try:
        image = client.images.pull(name, tag=tag)
    except docker.errors.APIError:
        return None
    for repo_digest in image.attrs.get("RepoDigests") or []:
        repository, _, digest = str(repo_digest).partition("@")
        if repository == name:
            return digest
    return None


def built_on(client: docker.DockerClient, digests: Mapping[str, str]) -> bool:
    """The engine's copy of each base is the resolved digest (so the build used it)."""
    for reference, digest in digests.items():
        name, _ = split_reference(reference)
        try:
            repo_digests = client.images.get(reference).attrs.get("RepoDigests") or []
        except docker.errors.ImageNotFound:
            return False
        if f"{name}@{digest}" not in repo_digests:
            return False
    return True


def image_here(client: docker.DockerClient, image_id: str) -> bool:
    """Whether this host's engine holds ``image_id`` (a tag task's cheap precondition)."""
    try:
        return image_exists(client, image_id)
    except docker.errors.APIError:
        return False
