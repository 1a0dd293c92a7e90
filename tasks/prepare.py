"""The caller's side of a build request: arguments validated, context digested, secrets sealed.

``prepare_build`` turns prefect-docker's build arguments into a ``BuildSpec``
that any worker can run: the context travels by digest (or, with
``context_transport="path"``, is read from a shared filesystem). Nothing
here runs on a worker: it reads the caller's files and environment.
"""

from __future__ import annotations

from typing import Any

from dockyard.config.settings import Settings
from dockyard.tasks.context import auto_dockerfile as auto
from dockyard.tasks.registry.base_images import base_references, build_arguments
from dockyard.tasks.request.build_secrets import seal_secrets
from dockyard.tasks.request.arguments import bind_build_arguments, build_options, dockerfile_output_in
from dockyard.tasks.context.pack import PackedContext, context_directory
from dockyard.tasks.context.scan import lazy_context
from dockyard.tasks.errors import InvalidInput
from dockyard.tasks.request.spec import BuildSpec, auto_dockerfile_bytes, dockerfile_digest, spec_key


def prepare_build(params: dict[str, Any], settings: Settings) -> tuple[BuildSpec, PackedContext]:
    """Validate ``params``, digest the context and compute the key; nothing is sent yet.

    The context's digest comes from a stat walk with the per-file digest cache
    (``dockyard.tasks.context.scan``); its tar is packed only if ``packed.file`` is used
    (an upload), so a cache hit costs no pack.
    """
    args = bind_build_arguments(params)
    options = build_options(args, settings)
    options.check_allowed(settings)
    context = context_directory(options.build_kwargs)
    build_kwargs = {name: value for name, value in options.build_kwargs.items() if name != "path"}
    sealed_secrets: dict[str, str] | None = None
    secret_ids: list[str] = []
    if "secrets" in build_kwargs:
        if options.build_backend != "buildx":
            raise InvalidInput("Build secrets need build_backend='buildx'.")
        sealed_secrets, secret_ids = seal_secrets(build_kwargs.pop("secrets"), settings)

    lines: list[str] | None = None
    if options.dockerfile == "auto":
        if (context / "Dockerfile").exists():
            raise InvalidInput("Dockerfile already exists.")
        lines = auto.auto_dockerfile_lines(
            context, base_image=settings.auto_base_image, install_command=settings.auto_install_command
        )
        content = auto_dockerfile_bytes(lines)
        dockerfile = "auto"
        packed = lazy_context(
            context, dockerfile=None, max_bytes=settings.context_max_bytes, cache_dir=settings.digest_cache_dir
        )
        if args["persist_dockerfile"]:
            packed.pack_now()  # the copy written into the context below is not part of this build's context
            auto.persist_dockerfile(lines, dockerfile_output_in(context, args["dockerfile_output_path"]))
    else:
        dockerfile_path = (context / options.dockerfile).resolve()
        if not dockerfile_path.is_relative_to(context):
            raise InvalidInput(f"Dockerfile {options.dockerfile!r} must be inside the build context.")
        if not dockerfile_path.is_file():
            raise InvalidInput(f"Dockerfile {options.dockerfile!r} not found in {str(context)!r}.")
        dockerfile = str(dockerfile_path.relative_to(context))
        content = dockerfile_path.read_bytes()
        packed = lazy_context(
            context, dockerfile=dockerfile, max_bytes=settings.context_max_bytes, cache_dir=settings.digest_cache_dir
        )

    fields: dict[str, Any] = {
        **options.model_dump(),
        "dockerfile": dockerfile,
        "build_kwargs": build_kwargs,
        "dockerfile_lines": lines,
        "dockerfile_digest": dockerfile_digest(content),
        "context_digest": packed.digest,
        "context_size": packed.size,
        "context_path": str(context) if settings.context_transport == "path" else None,
        "sealed_secrets": sealed_secrets,
        "secret_ids": secret_ids,
        "secrets_owner": settings.team if secret_ids else None,
        "base_images": base_references(content.decode(errors="replace"), build_arguments(build_kwargs)),
    }
    unkeyed = BuildSpec.model_construct(**fields, key="")
    return BuildSpec.parse({**fields, "key": spec_key(unkeyed)}), packed
