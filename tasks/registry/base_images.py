"""Base images by digest: a build that pulls is keyed by what its ``FROM`` tags name now.

The spec carries the base references its Dockerfile names (``base_images``,
read by the caller, checked by the worker against the Dockerfile it builds).
A build that pulls (``pull``, True unless set False) is cached under its
content key plus each base's digest, resolved through the registry (the
farm's login, one HEAD per base) or, on a worker, the engine after a pull.
A base re-pushed under the same tag is then another key: a miss. A build
with ``pull=False`` is keyed by its bases' tags, as the engine's local copy
is what it builds on.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from dockyard.config.settings import Settings
from dockyard.tasks.registry import manifests as registry
from dockyard.tasks.request.cache_key import digest_of
from dockyard.tasks.errors import BaseUnavailable, InvalidInput
from dockyard.tasks.registry.login import resolving_login
from dockyard.tasks.request.naming import split_reference
from dockyard.tasks.request.spec import BuildSpec

EngineDigest = Callable[[str], "str | None"]  # a reference -> its digest on an engine after a pull
_VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


def _instructions(dockerfile: str) -> list[list[str]]:
    """The Dockerfile's instructions as word lists (continuation lines joined, comments dropped)."""
    joined = re.sub(r"\\\r?\n", " ", dockerfile)
    return [line.split() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def base_references(dockerfile: str, buildargs: Mapping[str, str] | None = None) -> list[str]:
    """The images the Dockerfile's ``FROM`` lines name, build arguments substituted;
    earlier stages, ``scratch`` and references already pinned by digest are left out."""
    values: dict[str, str] = {}
    stages: set[str] = set()
    found: list[str] = []
    for words in _instructions(dockerfile):
        instruction, arguments = words[0].upper(), words[1:]
        if instruction == "ARG" and arguments and not stages and not found:
            name, _, default = arguments[0].partition("=")
            values[name] = (buildargs or {}).get(name, default)
        elif instruction == "FROM":
            arguments = [word for word in arguments if not word.startswith("--")]
            if not arguments:
                continue
            image = _VARIABLE.sub(lambda match: values.get(match.group(1) or match.group(2), ""), arguments[0])
            if len(arguments) >= 3 and arguments[1].lower() == "as":
                stages.add(arguments[2].lower())
            if image.lower() in stages or image == "scratch" or "@sha256:" in image or image in found:
                continue
            found.append(image)
    return found


def build_arguments(build_kwargs: Mapping[str, object]) -> dict[str, str]:
    """The build arguments of either backend (docker-py ``buildargs``, buildx ``build_args``)."""
    found = build_kwargs.get("buildargs") or build_kwargs.get("build_args") or {}
    return {str(name): str(value) for name, value in found.items()} if isinstance(found, Mapping) else {}


def check_bases(spec: BuildSpec, dockerfile: bytes) -> None:
    """The spec names the bases its Dockerfile names (a message cannot claim others)."""
    named = base_references(dockerfile.decode(errors="replace"), build_arguments(spec.build_kwargs))
    if named != spec.base_images:
        raise InvalidInput(f"base_images {spec.base_images} do not match the Dockerfile's FROM images {named}.")


def pulls(spec: BuildSpec) -> bool:
    """The build pulls its bases (both backends default to ``pull=True``)."""
    return spec.build_kwargs.get("pull", True) is not False


def registry_digest(reference: str, settings: Settings) -> str | None:
    """The digest the registry serves for ``reference`` (one HEAD), or None."""
    name, tag = split_reference(reference)
    return registry.served_digest(name, tag, resolving_login(settings, reference))


def resolve(spec: BuildSpec, settings: Settings, engine_digest: EngineDigest | None = None) -> dict[str, str] | None:
    """Each base of a pulling build with its digest now; None if one cannot be resolved.

    The registry answers first; ``engine_digest`` (a worker's engine, after a pull) second.
    """
    digests: dict[str, str] = {}
    for reference in spec.base_images if pulls(spec) else []:
        digest = registry_digest(reference, settings)
        if digest is None and engine_digest is not None:
            digest = engine_digest(reference)
        if digest is None:
            return None
        digests[reference] = digest
    return digests


def cache_key(spec: BuildSpec, digests: Mapping[str, str]) -> str:
    """The key a build is cached under: its content key, plus its bases' digests when it pulls."""
    return digest_of({"build": spec.key, "bases": dict(digests)}) if digests else spec.key


def worker_cache_key(spec: BuildSpec, settings: Settings, engine_digest: EngineDigest) -> tuple[str, dict[str, str]]:
    """The cache key on a worker, and the digests in it; ``BaseUnavailable`` when a base resolves nowhere."""
    digests = resolve(spec, settings, engine_digest)
    if digests is None:
        raise BaseUnavailable(f"Cannot resolve the base images {spec.base_images} of {spec.image_name} to digests.")
    return cache_key(spec, digests), digests


