"""The buildx backend: python-on-whales driving ``docker buildx build`` on this host's engine.

Every call gets a private Docker config directory (logins made for it land
there and are removed with it); the build's network is the farm's policy's
(``dockyard.tasks.engine.build_network``), ``none`` if nothing named one. A build is
tried once here: a transient error (a registry outage, prefect-docker's buildx
retry list) is raised as ``BaseUnavailable`` and retried by one layer only, the
Celery task's retry of ``TransientError`` on the farm
(``dockyard.tasks.celery_tasks._RETRY``) or the local step's loop
(``dockyard.tasks.local_steps``); retrying here as well multiplied the attempts.
A ``BuildStop`` interrupts the ``docker buildx build`` process tree (found by
the call's private config directory, ``dockyard.tasks.engine.build_stop``):
buildx cancels the solve on the engine and the build raises ``Cancelled``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from python_on_whales import DockerClient
from python_on_whales.exceptions import DockerException

from dockyard.config.settings import Settings
from dockyard.tasks.engine.build_stop import BuildStop, interrupt_processes
from dockyard.tasks.errors import BuildError, Cancelled, InvalidInput, engine_error
from dockyard.tasks.request.spec import platforms_of
from dockyard.tasks.output import OutputSink


@contextlib.contextmanager
def private_docker(settings: Settings) -> Iterator[tuple[DockerClient, Path]]:
    """A docker CLI client with its own config directory, logged in to the worker's registry."""
    config_dir = Path(tempfile.mkdtemp(prefix=f"dockyard-docker-config-{os.getpid()}-"))
    try:
        client = DockerClient(host=settings.docker_host, config=str(config_dir))
        if settings.registry_url and settings.registry_username and settings.registry_password:
            client.login(
                server=settings.registry_url, username=settings.registry_username,
                password=settings.registry_password.get_secret_value(),
            )
        yield client, config_dir
    finally:
        shutil.rmtree(config_dir, ignore_errors=True)


def buildx_build(
    settings: Settings,
    *,
    context: Path,
    dockerfile: str,
    tags: list[str],
    build_kwargs: Mapping[str, Any],
    labels: Mapping[str, str],
    output: OutputSink,
    stop: BuildStop | None = None,
) -> str:
    """Build with buildx; return the image id (or, for a multi-platform push, the pushed digest)."""
    kwargs = dict(build_kwargs)
    platforms = platforms_of(kwargs)
    kwargs.pop("platforms", None)
    kwargs.pop("platform", None)
    push = bool(kwargs.pop("push", False))
    pull = bool(kwargs.pop("pull", True))
    build_args = kwargs.pop("build_args", None) or kwargs.pop("buildargs", None) or {}
    kwargs.setdefault("network", "none")  # a RUN step reaches nothing, the farm's Redis included
    multi = bool(platforms and len(platforms) > 1)
    kwargs.setdefault("load", not multi)
    with private_docker(settings) as (client, config_dir):
        metadata_file = config_dir / "metadata.json"
        if stop is not None:
            if stop.requested.is_set():
                raise Cancelled("The build was stopped before it reached the engine.")
            marker = str(config_dir)

            def interrupt() -> None:  # the process tree started below, found by its config directory
                interrupt_processes(marker)

            stop.attach(interrupt)
        try:
            lines = client.buildx.build(
                str(context), file=str(context / dockerfile), tags=tags, pull=pull, push=push,
                platforms=platforms, labels=dict(labels), build_args=dict(build_args),
                metadata_file=str(metadata_file), progress="plain", stream_logs=True, **kwargs,
            )
            for line in lines:  # type: ignore[union-attr]
                output(line if line.endswith("\n") else line + "\n")
        except TypeError as exc:
            raise InvalidInput(f"Unknown or wrong buildx argument: {exc}") from exc
        except DockerException as exc:
            if stop is not None and stop.requested.is_set():
                raise Cancelled("The build was stopped on the engine (buildx interrupted).") from exc
            raise engine_error(str(exc), doing="build") from exc  # BaseUnavailable for an outage: retried by the caller's layer
        finally:
            if stop is not None:
                stop.detach()
        if stop is not None and stop.requested.is_set():
            raise Cancelled("The build was stopped on the engine (buildx interrupted).")
        metadata = json.loads(metadata_file.read_text()) if metadata_file.exists() else {}
    image_id = metadata.get("containerimage.config.digest") or metadata.get("containerimage.digest")
    if not isinstance(image_id, str):
        raise BuildError("buildx did not report an image id for the built image.")
    return image_id


def buildx_push(
    settings: Settings,
    *,
    image_name: str,
    tags: list[str | None],
    credentials: Mapping[str, Any] | None,
    output: OutputSink,
) -> str | None:
    """Push each tag with the docker CLI from a private config; return the first tag's digest."""
    with private_docker(settings) as (client, _config_dir):
        if credentials is not None:
            try:
                client.login(
                    server=credentials.get("registry_url"), username=credentials["username"],
                    password=credentials["password"],
                )
            except DockerException as exc:
                raise engine_error(str(exc), doing=f"login to {credentials.get('registry_url')}") from exc
        for tag in tags:
            reference = f"{image_name}:{tag}" if tag else image_name
            output(f"Pushing {reference}...\n")
            try:
                client.image.push(reference, quiet=True)
            except DockerException as exc:
                raise engine_error(str(exc), doing=f"pushing {reference}") from exc
            output(f"Pushed {reference}\n")
        first = f"{image_name}:{tags[0]}" if tags[0] else image_name
        digests = client.image.inspect(first).repo_digests
    for entry in digests:
        repository, _, digest = entry.partition("@")
        if repository == image_name:
            return digest
    return None
