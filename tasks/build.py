"""``build_docker_image``: prefect-docker's build step on the docker-py backend."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors

from config.settings import Settings, get_settings
from tasks import dockerfile as auto
from tasks.buildx import buildx_build, check_platforms
from tasks.engine import default_build_network, docker_client
from tasks.errors import BuildError, InvalidInput
from tasks.naming import default_tag, qualify_image_name, validate_tag
from tasks.results import BuildDockerImageResult

BUILD_BACKENDS = ("docker-py", "buildx")
IMAGE_LABELS = {"io.dockyard.builder": "dockyard"}
OutputSink = Callable[[str], None]

DENIED_HINT = (
    "Docker reported access denied. This can happen if the base image requires "
    "authentication, if you are not logged in to the registry, or if the image "
    "name is invalid. Check your image name (no spaces) and run `docker login` "
    "for the registry you are using."
)


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
    del ignore_cache  # caching is the caller's concern (see tasks.cache)
    return build_image(
        image_name,
        dockerfile=dockerfile,
        tag=tag,
        additional_tags=additional_tags,
        persist_dockerfile=persist_dockerfile,
        dockerfile_output_path=dockerfile_output_path,
        build_backend=build_backend,
        build_kwargs=build_kwargs,
        settings=get_settings(),
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
    auto_lines: list[str] | None = None,
) -> BuildDockerImageResult:
    """The build with its I/O injected: the engine client and where output lines go.

    ``auto_lines`` replaces the generated Dockerfile of ``dockerfile="auto"``
    (the caller generates it from its own directory's name).
    """
    image_name = qualify_image_name(image_name, settings.default_namespace)
    if build_backend not in BUILD_BACKENDS:
        raise InvalidInput(
            f"Invalid build_backend {build_backend!r}. Expected 'docker-py' or 'buildx'."
        )
    if build_backend == "buildx":
        check_platforms(build_kwargs or {})
    tag = tag or default_tag()
    tags = [tag, *(additional_tags or [])]
    for each in tags:
        validate_tag(each)
    kwargs = dict(build_kwargs or {})
    context = Path(kwargs.pop("path", None) or os.getcwd())
    if not context.is_dir():
        raise InvalidInput(f"Build context {str(context)!r} is not a directory.")

    if client is None:
        with docker_client(settings) as owned:
            return build_image(
                image_name, dockerfile=dockerfile, tag=tag, additional_tags=additional_tags,
                persist_dockerfile=persist_dockerfile, dockerfile_output_path=dockerfile_output_path,
                build_backend=build_backend, build_kwargs={**kwargs, "path": str(context)},
                settings=settings, client=owned, output=output, auto_lines=auto_lines,
            )

    if dockerfile == "auto":
        lines = auto_lines or auto.auto_dockerfile_lines(
            context, base_image=settings.auto_base_image,
            install_command=settings.auto_install_command,
        )
        with auto.generated_dockerfile(context, lines) as generated:
            image_id = _backend_build(build_backend, client, settings, context, generated, image_name, tags, kwargs, output)
        if persist_dockerfile:
            auto.persist_dockerfile(lines, context / dockerfile_output_path)
    else:
        if not (context / dockerfile).is_file() and not Path(dockerfile).is_file():
            raise InvalidInput(f"Dockerfile {dockerfile!r} not found in {str(context)!r}.")
        image_id = _backend_build(build_backend, client, settings, context, dockerfile, image_name, tags, kwargs, output)
    return {
        "image_name": image_name,
        "tag": tag,
        "image": f"{image_name}:{tag}",
        "image_id": image_id,
        "additional_tags": list(additional_tags or []),
    }


def _backend_build(
    backend: str,
    client: docker.DockerClient,
    settings: Settings,
    context: Path,
    dockerfile: str,
    image_name: str,
    tags: list[str],
    kwargs: dict[str, Any],
    output: OutputSink,
) -> str:
    """Build with ``backend`` and leave the image tagged with every tag; return its id."""
    if backend == "buildx":
        labels = kwargs.pop("labels", None) or {}
        if not isinstance(labels, dict):
            raise InvalidInput(f"labels must be a mapping, not {type(labels).__name__}.")
        return buildx_build(
            settings, context=context, dockerfile=dockerfile, tags=[f"{image_name}:{t}" for t in tags],
            build_kwargs=kwargs, labels={**labels, **IMAGE_LABELS}, output=output,
        )
    kwargs.setdefault("tag", f"{image_name}:{tags[0]}")  # never untagged, even for a moment
    image_id = _run_build(client, context, dockerfile, kwargs, output)
    apply_tags(client, image_id, image_name, tags)
    return image_id


def _run_build(
    client: docker.DockerClient,
    context: Path,
    dockerfile: str,
    kwargs: dict[str, Any],
    output: OutputSink,
) -> str:
    """Run the engine's build and read its event stream; return the image id."""
    labels = kwargs.pop("labels", None) or {}
    if not isinstance(labels, dict):
        raise InvalidInput(f"labels must be a mapping, not {type(labels).__name__}.")
    kwargs.setdefault("pull", True)
    kwargs.setdefault("rm", True)
    kwargs.setdefault("forcerm", True)
    try:
        if kwargs.get("network_mode") is None and (network := default_build_network(client)):
            kwargs["network_mode"] = network
        events = client.api.build(
            path=str(context), dockerfile=dockerfile, decode=True,
            labels={**labels, **IMAGE_LABELS}, **kwargs,
        )
        return _read_build_events(events, output)
    except TypeError as exc:
        raise InvalidInput(f"Unknown or wrong build argument: {exc}") from exc
    except docker.errors.APIError as exc:
        raise _with_hint(BuildError(str(exc.explanation or exc))) from exc
    except BuildError as exc:
        hinted = _with_hint(exc)
        if hinted is exc:
            raise
        raise hinted from exc


def _read_build_events(events: Iterator[dict[str, Any]], output: OutputSink) -> str:
    image_id: str | None = None
    for event in events:
        if "stream" in event:
            output(event["stream"])
        elif "aux" in event and isinstance(event["aux"], dict) and "ID" in event["aux"]:
            image_id = event["aux"]["ID"]
        elif "error" in event:
            raise BuildError(event["error"])
        elif "message" in event:
            raise BuildError(event["message"])
    if not isinstance(image_id, str):
        raise BuildError("Docker did not return an image ID for built image.")
    return image_id


_DENIED_MARKERS = ("denied", "unauthorized", "no basic auth credentials", "authentication required")


def _with_hint(error: BuildError) -> BuildError:
    """Add the reference's hint to access-denied errors (and the engine's other auth refusals)."""
    message = str(error)
    if any(marker in message.lower() for marker in _DENIED_MARKERS):
        return BuildError(f"{message}\n{DENIED_HINT}")
    return error


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
