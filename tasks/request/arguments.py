"""prefect-docker's step arguments bound to its signatures and validated as the farm's requests.

One place turns the reference's keyword arguments into ``BuildOptions`` and
``PushRequest``: the caller, the worker (for a build sent by name) and the
local steps all call it.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dockyard.config.settings import Settings
from dockyard.tasks.errors import InvalidInput
from dockyard.tasks.request.naming import default_tag, qualify_image_name
from dockyard.tasks.request.spec import BuildOptions, PushRequest


def reference_build(
    image_name: str,
    dockerfile: str = "Dockerfile",
    tag: str | None = None,
    additional_tags: list[str] | None = None,
    ignore_cache: bool = False,
    persist_dockerfile: bool = False,
    dockerfile_output_path: str = "Dockerfile.generated",
    build_backend: str = "docker-py",
    **build_kwargs: Any,
) -> None:
    """prefect-docker's ``build_docker_image`` signature (the steps keep it; a test holds them to it)."""


BUILD_SIGNATURE = inspect.signature(reference_build)


def bind_build_arguments(params: dict[str, Any]) -> dict[str, Any]:
    """prefect-docker's build arguments, with unknown ones gathered in ``build_kwargs``."""
    try:
        bound = BUILD_SIGNATURE.bind(**params)
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
        "tag": default_tag() if args["tag"] is None else args["tag"],  # "" is refused, not a timestamp
        "additional_tags": [] if additional is None else additional,
        "dockerfile": args["dockerfile"],
        "build_backend": args["build_backend"],
        "build_kwargs": {name: value for name, value in args["build_kwargs"].items() if name != "limits"},
        "ignore_cache": args["ignore_cache"],
        "limits": args["build_kwargs"].get("limits"),  # dockyard's own: the step's resource limits, not an engine option
    })


def dockerfile_output_in(context: Path, output_path: object) -> Path:
    """Where ``persist_dockerfile`` writes: ``dockerfile_output_path`` resolved (links followed) strictly
    inside ``context``; ``InvalidInput`` for a path that climbs out, is absolute elsewhere, or is the
    context itself. The one check of the caller's ``prepare_build`` and the local step."""
    if not isinstance(output_path, (str, os.PathLike)) or not os.fspath(output_path):
        raise InvalidInput("dockerfile_output_path must be a file path inside the build context.")
    root = context.resolve()
    resolved = (root / os.fspath(output_path)).resolve()
    if resolved == root or not resolved.is_relative_to(root):
        raise InvalidInput("dockerfile_output_path must be inside the build context.")
    return resolved


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
