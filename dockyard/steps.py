"""Drop-in Prefect deployment steps: prefect-docker's signatures, run on the farm.

In a ``prefect.yaml``, only the dotted path changes::

    build:
      - dockyard.steps.build_docker_image:
          id: build-image
          requires: dockyard
          image_name: 127.0.0.1:5000/team/app
          tag: dev
    push:
      - dockyard.steps.push_docker_image:
          requires: dockyard
          image_name: "{{ build-image.image_name }}"
          tag: "{{ build-image.tag }}"

Build output is printed while the build runs on whichever host; the
returned dicts are prefect-docker's (the push result adds ``digest``).
"""

from __future__ import annotations

from typing import Any

from dockyard.tasks import client
from dockyard.tasks.output import write_stdout
from dockyard.tasks.request.results import (
    BuildDockerImageResult,
    PushDockerImageResult,
    reference_build_result,
    reference_push_result,
)


def build_docker_image(
    image_name: str,
    dockerfile: str = "Dockerfile",
    tag: str | None = None,
    additional_tags: list[str] | None = None,
    ignore_cache: bool = False,
    persist_dockerfile: bool = False,
    dockerfile_output_path: str = "Dockerfile.generated",
    build_backend: str = "docker-py",
    **build_kwargs: Any,
) -> BuildDockerImageResult:
    """Build on the farm with prefect-docker's arguments; prints the build output."""
    result = client.build(
        image_name, dockerfile=dockerfile, tag=tag, additional_tags=additional_tags,
        ignore_cache=ignore_cache, persist_dockerfile=persist_dockerfile,
        dockerfile_output_path=dockerfile_output_path, build_backend=build_backend,
        on_output=write_stdout, **build_kwargs,
    )
    return reference_build_result(result)


def push_docker_image(
    image_name: str,
    tag: str | None = None,
    credentials: dict[str, Any] | None = None,
    additional_tags: list[str] | None = None,
    ignore_cache: bool = False,
    build_backend: str = "docker-py",
) -> PushDockerImageResult:
    """Push from the host holding the image, with prefect-docker's arguments."""
    result = client.push(
        image_name, tag=tag, credentials=credentials, additional_tags=additional_tags,
        ignore_cache=ignore_cache, build_backend=build_backend,
    )
    return reference_push_result(result)
