"""``build_docker_image``: prefect-docker's build step, and the build operation under it.

``build_docker_image`` and ``build_image`` validate their arguments with
``BuildOptions`` (the farm's one validator) and build on one engine;
``build_in`` is the operation itself: validated options, a context
directory and an engine client in, an image id out.
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import docker
import docker.errors

from dockyard.config.settings import Settings, get_settings
from dockyard.tasks.context import auto_dockerfile as auto
from dockyard.tasks.engine.buildx import buildx_build
from dockyard.tasks.engine.connection import default_build_network, docker_client
from dockyard.tasks.errors import BuildError, InvalidInput, engine_error
from dockyard.tasks.context.pack import context_directory
from dockyard.tasks.request.naming import default_tag, qualify_image_name
from dockyard.tasks.request.results import BuildDockerImageResult, build_result
from dockyard.tasks.request.spec import BuildOptions

IMAGE_LABELS = {"io.dockyard.builder": "dockyard"}
OutputSink = Callable[[str], None]


def write_stdout(text: str) -> None:
    """Default output sink: the reference writes build output to stdout."""
    sys.stdout.write(text)
    sys.stdout.flush()


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


@functools.lru_cache(maxsize=1)
def _reference_signature() -> inspect.Signature:
    return inspect.signature(build_docker_image)


def bind_build_arguments(params: dict[str, Any]) -> dict[str, Any]:
    """prefect-docker's build arguments, with unknown ones gathered in ``build_kwargs``."""
    try:
        bound = _reference_signature().bind(**params)
    except TypeError as exc:
        raise InvalidInput(f"Bad build arguments: {exc}") from exc
    bound.apply_defaults()
    return dict(bound.arguments)


def build_options(args: dict[str, Any], settings: Settings) -> BuildOptions:
    """Bound build arguments as validated ``BuildOptions``: name qualified, default tag filled."""
    image_name = args["image_name"]
    qualified = qualify_image_name(image_name, settings.default_namespace)
    additional = args["additional_tags"]
    return BuildOptions.parse({
        "image_name": qualified,
        "tag": args["tag"] or default_tag(),
        "additional_tags": [] if additional is None else additional,
        "dockerfile": args["dockerfile"],
        "build_backend": args["build_backend"],
        "build_kwargs": dict(args["build_kwargs"]),
        "ignore_cache": args["ignore_cache"],
    })


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
    if options.dockerfile == "auto":
        lines = auto.auto_dockerfile_lines(
            context, base_image=settings.auto_base_image, install_command=settings.auto_install_command,
        )
    elif not (context / options.dockerfile).is_file():
        raise InvalidInput(f"Dockerfile {options.dockerfile!r} not found in {str(context)!r}.")
    if client is None:
        with docker_client(settings) as owned:
            image_id = build_in(options, context=context, auto_lines=lines, client=owned, settings=settings, output=output)
    else:
        image_id = build_in(options, context=context, auto_lines=lines, client=client, settings=settings, output=output)
    if lines is not None and persist_dockerfile:
        auto.persist_dockerfile(lines, context / dockerfile_output_path)
    return build_result(options, image_id)


def build_in(
    options: BuildOptions,
    *,
    context: Path,
    auto_lines: list[str] | None,
    client: docker.DockerClient,
    settings: Settings,
    output: OutputSink,
    secrets: list[str] | None = None,
) -> str:
    """Build ``options`` from the directory ``context``; leave every tag on the image; return its id.

    ``auto_lines`` is the generated Dockerfile of ``dockerfile="auto"``; it is
    written into ``context`` under a unique name for the build and removed after.
    """
    kwargs = {name: value for name, value in options.build_kwargs.items() if name != "path"}
    if secrets:
        kwargs["secrets"] = secrets
    if options.dockerfile != "auto":
        return _backend_build(options, kwargs, client, settings, context, options.dockerfile, output)
    if auto_lines is None:
        raise InvalidInput("dockerfile='auto' needs the generated Dockerfile's lines.")
    with auto.generated_dockerfile(context, auto_lines) as generated:
        return _backend_build(options, kwargs, client, settings, context, generated, output)


def build_from_archive(
    options: BuildOptions,
    archive: BinaryIO,
    *,
    auto_lines: list[str] | None,
    client: docker.DockerClient,
    output: OutputSink,
) -> str:
    """Build ``options`` on the classic builder from a context tar streamed as it is; return the image id.

    The engine unpacks the tar itself, so nothing of it touches this host's
    filesystem. The generated Dockerfile of ``dockerfile="auto"`` is added as a member.
    """
    if options.build_backend != "docker-py":
        raise InvalidInput("Only the docker-py backend builds from a streamed context.")
    dockerfile = options.dockerfile
    if options.dockerfile == "auto":
        if auto_lines is None:
            raise InvalidInput("dockerfile='auto' needs the generated Dockerfile's lines.")
        dockerfile = auto.append_generated_dockerfile(archive, auto_lines)
    kwargs = {name: value for name, value in options.build_kwargs.items() if name != "path"}
    labels = {**(kwargs.pop("labels", None) or {}), **IMAGE_LABELS}
    kwargs.setdefault("tag", options.references[0])
    archive.seek(0)
    image_id = _run_build(client, {"fileobj": archive, "custom_context": True}, dockerfile, kwargs, labels, output)
    apply_tags(client, image_id, options.image_name, options.tags)
    return image_id


def _backend_build(
    options: BuildOptions,
    kwargs: dict[str, Any],
    client: docker.DockerClient,
    settings: Settings,
    context: Path,
    dockerfile: str,
    output: OutputSink,
) -> str:
    """Build with the options' backend and leave the image tagged with every tag; return its id."""
    labels = {**(kwargs.pop("labels", None) or {}), **IMAGE_LABELS}
    if options.build_backend == "buildx":
        return buildx_build(
            settings, context=context, dockerfile=dockerfile, tags=options.references,
            build_kwargs=kwargs, labels=labels, output=output,
        )
    kwargs.setdefault("tag", options.references[0])  # never untagged, even for a moment
    image_id = _run_build(client, {"path": str(context)}, dockerfile, kwargs, labels, output)
    apply_tags(client, image_id, options.image_name, options.tags)
    return image_id


def _run_build(
    client: docker.DockerClient,
    source: dict[str, Any],
    dockerfile: str,
    kwargs: dict[str, Any],
    labels: dict[str, str],
    output: OutputSink,
) -> str:
    """Run the engine's build of ``source`` (a path, or a tar file) and read its events; the image id."""
    kwargs.setdefault("pull", True)
    kwargs.setdefault("rm", True)
    kwargs.setdefault("forcerm", True)
    try:
        if kwargs.get("network_mode") is None and (network := default_build_network(client)):
            kwargs["network_mode"] = network
        events = client.api.build(**source, dockerfile=dockerfile, decode=True, labels=labels, **kwargs)
        return _read_build_events(events, output)
    except TypeError as exc:
        raise InvalidInput(f"Unknown or wrong build argument: {exc}") from exc
    except docker.errors.APIError as exc:
        raise engine_error(str(exc.explanation or exc), doing="build") from exc


def _read_build_events(events: Iterator[dict[str, Any]], output: OutputSink) -> str:
    image_id: str | None = None
    for event in events:
        if "stream" in event:
            output(event["stream"])
        elif "aux" in event and isinstance(event["aux"], dict) and "ID" in event["aux"]:
            image_id = event["aux"]["ID"]
        elif "error" in event or "message" in event:
            raise engine_error(str(event.get("error") or event.get("message")), doing="build")
    if not isinstance(image_id, str):
        raise BuildError("Docker did not return an image ID for built image.")
    return image_id


def apply_tags(client: docker.DockerClient, image_id: str, image_name: str, tags: list[str]) -> None:
    """Tag ``image_id`` with every tag it lacks, or with none of them if one fails."""
    try:
        image = client.images.get(image_id)
    except docker.errors.ImageNotFound as exc:
        raise BuildError(f"Image {image_id} vanished from the engine before it was tagged.") from exc
    present = set(image.tags)
    applied: list[str] = []
    try:
        for tag in tags:
            if f"{image_name}:{tag}" in present:
                continue
            image.tag(repository=image_name, tag=tag)
            applied.append(f"{image_name}:{tag}")
    except docker.errors.APIError as exc:
        for reference in applied:
            client.images.remove(reference, noprune=True)
        raise BuildError(f"Tagging {image_name} failed: {exc.explanation or exc}") from exc
