"""prefect-docker's two steps run on this host's own engine, without the farm.

``build_docker_image`` and ``push_docker_image`` keep the reference's exact
signatures and results; ``build_image`` and ``push_image`` take the settings
and an engine client explicitly. The farm's steps are ``dockyard.steps``.

No Celery task retries a local step, so ``build_image`` itself retries a
buildx build's transient errors (``BaseUnavailable``: prefect-docker's buildx
retry list) ``transient_retries`` times with backoff; the buildx backend tries
once, so that is the only retry of a local build.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import docker

from dockyard.config.settings import Settings, get_settings
from dockyard.tasks.context import auto_dockerfile as auto
from dockyard.tasks.context.pack import context_directory
from dockyard.tasks.engine.build import build_in
from dockyard.tasks.engine.connection import docker_client
from dockyard.tasks.engine.push import push_in
from dockyard.tasks.errors import BaseUnavailable, InvalidInput
from dockyard.tasks.output import OutputSink, write_stdout
from dockyard.tasks.request.arguments import bind_build_arguments, build_options, dockerfile_output_in, push_request
from dockyard.tasks.request.results import BuildDockerImageResult, PushDockerImageResult, build_result, push_result
from dockyard.tasks.request.spec import Credentials

logger = logging.getLogger("dockyard.local_steps")


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
    """Build an image on this host's engine, with prefect-docker's signature and result."""
    del ignore_cache  # caching is the caller's concern (see dockyard.tasks.cache.single_flight)
    return build_image(
        image_name, dockerfile=dockerfile, tag=tag, additional_tags=additional_tags,
        persist_dockerfile=persist_dockerfile, dockerfile_output_path=dockerfile_output_path,
        build_backend=build_backend, build_kwargs=build_kwargs, settings=get_settings(),
    )


def build_image(
    image_name: str,
    *,
    dockerfile: str = "Dockerfile",
    tag: str | None = None,
    additional_tags: list[str] | None = None,
    persist_dockerfile: bool = False,
    dockerfile_output_path: str = "Dockerfile.generated",
    build_backend: str = "docker-py",
    build_kwargs: dict[str, Any] | None = None,
    settings: Settings,
    client: docker.DockerClient | None = None,
    output: OutputSink = write_stdout,
) -> BuildDockerImageResult:
    """Validate prefect-docker's arguments and build on one engine (``client``, or the settings')."""
    args = bind_build_arguments({
        "image_name": image_name, "dockerfile": dockerfile, "tag": tag, "additional_tags": additional_tags,
        "persist_dockerfile": persist_dockerfile, "dockerfile_output_path": dockerfile_output_path,
        "build_backend": build_backend, **(build_kwargs or {}),
    })
    options = build_options(args, settings)
    context = context_directory(options.build_kwargs)
    lines = None
    persist_at = None
    if options.dockerfile == "auto":
        if persist_dockerfile:  # checked before anything is built or written
            persist_at = dockerfile_output_in(context, args["dockerfile_output_path"])
        lines = auto.auto_dockerfile_lines(
            context, base_image=settings.auto_base_image, install_command=settings.auto_install_command,
        )
    elif not (context / options.dockerfile).is_file():
        raise InvalidInput(f"Dockerfile {options.dockerfile!r} not found in {str(context)!r}.")
    if client is None:
        with docker_client(settings) as owned:
            image_id = _retrying(
                lambda: build_in(options, context=context, auto_lines=lines, client=owned, settings=settings, output=output),
                options.build_backend, settings, output,
            )
    else:
        engine = client
        image_id = _retrying(
            lambda: build_in(options, context=context, auto_lines=lines, client=engine, settings=settings, output=output),
            options.build_backend, settings, output,
        )
    if lines is not None and persist_at is not None:
        auto.persist_dockerfile(lines, persist_at)
    return build_result(options, image_id)


def _retrying(build: Callable[[], str], backend: str, settings: Settings, output: OutputSink) -> str:
    """``build()``, tried again on a buildx build's transient error, as prefect-docker's buildx backend does."""
    attempts = settings.transient_retries + 1 if backend == "buildx" else 1
    for attempt in range(attempts):
        try:
            return build()
        except BaseUnavailable as exc:
            if attempt + 1 >= attempts:
                raise
            delay = settings.transient_backoff_s * 2**attempt
            logger.warning("buildx transient error (attempt %d/%d), retrying in %.1f s: %s",
                           attempt + 1, attempts, delay, str(exc).strip()[-300:])
            output(f"transient error, retrying in {delay:.1f} s\n")
            time.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


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
