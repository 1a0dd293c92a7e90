"""A build request made ready for the farm: names qualified, context packed, key computed.

The caller prepares a ``BuildSpec`` from prefect-docker's arguments; any
worker can run it, because the context travels by digest (or, with
``context_transport="path"``, is read from a shared filesystem).
"""

from __future__ import annotations

import hashlib
import inspect
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from config.settings import Settings
from tasks import dockerfile as auto
from tasks.build import BUILD_BACKENDS, build_docker_image
from tasks.build_secrets import seal_secrets
from tasks.buildx import check_platforms
from tasks.cache_key import build_key, canonical
from tasks.context import PackedContext, pack_context
from tasks.errors import InvalidInput
from tasks.naming import default_tag, qualify_image_name, validate_tag

_BUILD_PARAMS = inspect.signature(build_docker_image)


class BuildSpec(BaseModel):
    """Everything a worker needs to run a build, as JSON."""

    image_name: str
    tag: str
    additional_tags: list[str]
    dockerfile: str
    dockerfile_lines: list[str] | None = None
    dockerfile_digest: str
    context_digest: str
    context_size: int
    context_path: str | None = None
    build_backend: str
    build_kwargs: dict[str, Any]
    ignore_cache: bool = False
    sealed_secrets: dict[str, str] | None = None
    key: str

    @property
    def references(self) -> list[str]:
        return [f"{self.image_name}:{tag}" for tag in [self.tag, *self.additional_tags]]


def bind_build_arguments(params: dict[str, Any]) -> dict[str, Any]:
    """prefect-docker's build arguments, with unknown ones gathered in ``build_kwargs``."""
    try:
        bound = _BUILD_PARAMS.bind(**params)
    except TypeError as exc:
        raise InvalidInput(f"Bad build arguments: {exc}") from exc
    bound.apply_defaults()
    return dict(bound.arguments)


def prepare_build(params: dict[str, Any], settings: Settings) -> tuple[BuildSpec, PackedContext]:
    """Validate ``params``, pack the context and compute the key; nothing is sent yet."""
    args = bind_build_arguments(params)
    image_name = qualify_image_name(args["image_name"], settings.default_namespace)
    backend = args["build_backend"]
    if backend not in BUILD_BACKENDS:
        raise InvalidInput(f"Invalid build_backend {backend!r}. Expected 'docker-py' or 'buildx'.")
    if backend == "buildx":
        check_platforms(args["build_kwargs"])
    tag = args["tag"] or default_tag()
    additional_tags = list(args["additional_tags"] or [])
    for each in [tag, *additional_tags]:
        validate_tag(each)
    build_kwargs = dict(args["build_kwargs"])
    context = Path(build_kwargs.pop("path", None) or os.getcwd()).resolve()
    if not context.is_dir():
        raise InvalidInput(f"Build context {str(context)!r} is not a directory.")
    labels = build_kwargs.get("labels")
    if labels is not None and not isinstance(labels, dict):
        raise InvalidInput(f"labels must be a mapping, not {type(labels).__name__}.")
    canonical(build_kwargs)  # refuses values that are not JSON
    sealed_secrets: dict[str, str] | None = None
    key_options = dict(build_kwargs)
    if backend == "buildx" and build_kwargs.get("secrets"):
        sealed_secrets, secret_ids = seal_secrets(build_kwargs.pop("secrets"), settings.secret_key)
        key_options = {**build_kwargs, "secrets": secret_ids}

    dockerfile = args["dockerfile"]
    lines: list[str] | None = None
    if dockerfile == "auto":
        if (context / "Dockerfile").exists():
            raise InvalidInput("Dockerfile already exists.")
        lines = auto.auto_dockerfile_lines(
            context, base_image=settings.auto_base_image, install_command=settings.auto_install_command
        )
        dockerfile_bytes = "".join(line + "\n" for line in lines).encode()
        packed = pack_context(context, max_bytes=settings.context_max_bytes)
        if args["persist_dockerfile"]:
            auto.persist_dockerfile(lines, context / args["dockerfile_output_path"])
    else:
        dockerfile_path = (context / dockerfile).resolve()
        if not dockerfile_path.is_file():
            raise InvalidInput(f"Dockerfile {dockerfile!r} not found in {str(context)!r}.")
        if not dockerfile_path.is_relative_to(context):
            raise InvalidInput(f"Dockerfile {dockerfile!r} must be inside the build context.")
        dockerfile = str(dockerfile_path.relative_to(context))
        dockerfile_bytes = dockerfile_path.read_bytes()
        packed = pack_context(context, dockerfile=dockerfile, max_bytes=settings.context_max_bytes)

    dockerfile_digest = "sha256:" + hashlib.sha256(dockerfile_bytes).hexdigest()
    spec = BuildSpec(
        image_name=image_name,
        tag=tag,
        additional_tags=additional_tags,
        dockerfile=dockerfile,
        dockerfile_lines=lines,
        dockerfile_digest=dockerfile_digest,
        context_digest=packed.digest,
        context_size=packed.size,
        context_path=str(context) if settings.context_transport == "path" else None,
        build_backend=backend,
        build_kwargs=build_kwargs,
        ignore_cache=bool(args["ignore_cache"]),
        sealed_secrets=sealed_secrets,
        key=build_key(
            context_digest=packed.digest,
            dockerfile_digest=dockerfile_digest,
            build_backend=backend,
            build_kwargs=key_options,
        ),
    )
    return spec, packed
