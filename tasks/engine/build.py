"""The build operation on one engine: a context (a directory or a streamed tar) in, a tagged image id out.

``build_in`` builds from a directory with either backend; ``build_from_archive``
streams a context tar to the classic builder as it is. Arguments are
validated before they get here (``dockyard.tasks.request.arguments``); the
network the steps get is the farm's policy's (``dockyard.tasks.engine.build_network``). A
``BuildStop`` given to either stops the build on the engine from another thread
(``dockyard.tasks.engine.build_stop``); the build then raises ``Cancelled``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import docker
import docker.errors

from dockyard.config.settings import Settings
from dockyard.tasks.context import auto_dockerfile as auto
from dockyard.tasks.engine.build_stop import BuildStop, captured_response, shut_stream
from dockyard.tasks.engine.build_network import apply_build_network
from dockyard.tasks.engine.buildx import buildx_build
from dockyard.tasks.engine.connection import default_build_network
from dockyard.tasks.errors import BuildError, Cancelled, InvalidInput, engine_error
from dockyard.tasks.output import OutputSink
from dockyard.tasks.request.spec import BuildOptions

IMAGE_LABELS = {"io.dockyard.builder": "dockyard"}


def build_in(
    options: BuildOptions,
    *,
    context: Path,
    auto_lines: list[str] | None,
    client: docker.DockerClient,
    settings: Settings,
    output: OutputSink,
    secrets: list[str] | None = None,
    stop: BuildStop | None = None,
) -> str:
    """Build ``options`` from the directory ``context``; leave every tag on the image; return its id.

    ``auto_lines`` is the generated Dockerfile of ``dockerfile="auto"``; it is
    written into ``context`` under a unique name for the build and removed after.
    """
    kwargs = {name: value for name, value in options.build_kwargs.items() if name != "path"}
    if secrets:
        kwargs["secrets"] = secrets
    if options.dockerfile != "auto":
        return _backend_build(options, kwargs, client, settings, context, options.dockerfile, output, stop)
    if auto_lines is None:
        raise InvalidInput("dockerfile='auto' needs the generated Dockerfile's lines.")
    with auto.generated_dockerfile(context, auto_lines) as generated:
        return _backend_build(options, kwargs, client, settings, context, generated, output, stop)


def build_from_archive(
    options: BuildOptions,
    archive: BinaryIO,
    *,
    auto_lines: list[str] | None,
    client: docker.DockerClient,
    settings: Settings,
    output: OutputSink,
    stop: BuildStop | None = None,
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
    apply_build_network(client, settings, "docker-py", kwargs)
    archive.seek(0)
    image_id = _run_build(client, {"fileobj": archive, "custom_context": True}, dockerfile, kwargs, labels, output, stop)
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
    stop: BuildStop | None = None,
) -> str:
    """Build with the options' backend and leave the image tagged with every tag; return its id."""
    labels = {**(kwargs.pop("labels", None) or {}), **IMAGE_LABELS}
    apply_build_network(client, settings, options.build_backend, kwargs)
    if options.build_backend == "buildx":
        return buildx_build(
            settings, context=context, dockerfile=dockerfile, tags=options.references,
            build_kwargs=kwargs, labels=labels, output=output, stop=stop,
        )
    kwargs.setdefault("tag", options.references[0])  # never untagged, even for a moment
    image_id = _run_build(client, {"path": str(context)}, dockerfile, kwargs, labels, output, stop)
    apply_tags(client, image_id, options.image_name, options.tags)
    return image_id


def _run_build(
    client: docker.DockerClient,
    source: dict[str, Any],
    dockerfile: str,
    kwargs: dict[str, Any],
    labels: dict[str, str],
    output: OutputSink,
    stop: BuildStop | None = None,
) -> str:
    """Run the engine's build of ``source`` (a path, or a tar file) and read its events; the image id.

    With ``stop``, the build's response stream is kept as it opens: a stop shuts it, the daemon
    cancels the build, and this raises ``Cancelled``.
    """
    kwargs.setdefault("pull", True)
    kwargs.setdefault("rm", True)
    kwargs.setdefault("forcerm", True)
    try:
        if kwargs.get("network_mode") is None and (network := default_build_network(client)):
            kwargs["network_mode"] = network
        if stop is None:
            events = client.api.build(**source, dockerfile=dockerfile, decode=True, labels=labels, **kwargs)
            return _read_build_events(events, output)
        return _run_stoppable(client, source, dockerfile, kwargs, labels, output, stop)
    except TypeError as exc:
        raise InvalidInput(f"Unknown or wrong build argument: {exc}") from exc
    except docker.errors.APIError as exc:
        raise engine_error(str(exc.explanation or exc), doing="build") from exc


def _run_stoppable(
    client: docker.DockerClient,
    source: dict[str, Any],
    dockerfile: str,
    kwargs: dict[str, Any],
    labels: dict[str, str],
    output: OutputSink,
    stop: BuildStop,
) -> str:
    """``_run_build``'s engine call and reading, with its response stream attached to ``stop``."""
    if stop.requested.is_set():
        raise Cancelled("The build was stopped before it reached the engine.")
    with captured_response(client.api) as captured:
        events = client.api.build(**source, dockerfile=dockerfile, decode=True, labels=labels, **kwargs)
    if captured.response is not None:
        stop.attach(lambda: shut_stream(captured.response))
    try:
        return _read_build_events(events, output, stop)
    except Exception as exc:
        if stop.requested.is_set():
            raise Cancelled("The build was stopped on the engine.") from exc
        raise
    finally:
        stop.detach()


def _read_build_events(events: Iterator[dict[str, Any]], output: OutputSink, stop: BuildStop | None = None) -> str:
    image_id: str | None = None
    for event in events:
        if stop is not None and stop.requested.is_set():
            raise Cancelled("The build was stopped on the engine.")
        if "stream" in event:
            output(event["stream"])
        elif "aux" in event and isinstance(event["aux"], dict) and "ID" in event["aux"]:
            image_id = event["aux"]["ID"]
        elif "error" in event or "message" in event:
            raise engine_error(str(event.get("error") or event.get("message")), doing="build")
    if stop is not None and stop.requested.is_set():
        raise Cancelled("The build was stopped on the engine.")
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
