"""The result dicts of build and push, as prefect-docker returns them (plus a few keys)."""

from __future__ import annotations

from typing import TypedDict


class BuildDockerImageResult(TypedDict):
    """Result of ``build_docker_image``: prefect-docker's keys."""

    image_name: str
    tag: str
    image: str
    image_id: str
    additional_tags: list[str] | None


class PushDockerImageResult(TypedDict, total=False):
    """Result of ``push_docker_image``: prefect-docker's keys and the pushed ``digest``."""

    image_name: str
    tag: str | None
    image: str
    additional_tags: list[str] | None
    digest: str | None
