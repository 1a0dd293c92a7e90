"""Image names and tags: validation, namespaces and the default tag."""

from __future__ import annotations

import re
from datetime import datetime, timezone

from dockyard.tasks.errors import InvalidInput

_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
# Docker's reference grammar: a path component, and a registry host with an optional port
_COMPONENT_RE = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_REGISTRY_RE = re.compile(r"localhost(?::[0-9]+)?|[A-Za-z0-9.-]*[.:][A-Za-z0-9.:-]*")


def validate_image_name(image_name: str) -> None:
    """Reject names prefect-docker rejects: not a string, empty, or with whitespace."""
    if not isinstance(image_name, str) or not image_name:
        raise InvalidInput(f"Invalid Docker image name {image_name!r}: expected a non-empty string.")
    if any(char.isspace() for char in image_name):
        raise InvalidInput(
            f"Invalid Docker image name {image_name!r}. Image names cannot contain "
            "spaces. Use lowercase letters, numbers, and separators like '-', '_', "
            "'.', and '/'."
        )
    if "@" in image_name:
        raise InvalidInput(f"Invalid Docker image name {image_name!r}: a digest reference cannot be built or pushed.")
    first, _, rest = image_name.partition("/")
    components = rest.split("/") if rest and _REGISTRY_RE.fullmatch(first) else image_name.split("/")
    if ":" in components[-1]:
        raise InvalidInput(
            f"Invalid Docker image name {image_name!r}: it names a tag; pass the tag as tag= instead."
        )
    for component in components:
        if not _COMPONENT_RE.fullmatch(component):
            raise InvalidInput(
                f"Invalid Docker image name {image_name!r}: repository part {component!r} must be "
                "lowercase letters and digits, separated by '.', '_', '__' or '-'."
            )


def validate_tag(tag: str) -> None:
    """Reject tags Docker would refuse, before anything is built."""
    if not isinstance(tag, str) or not _TAG_RE.fullmatch(tag):
        raise InvalidInput(
            f"Invalid Docker tag {tag!r}: up to 128 letters, digits, '_', '.' or '-', "
            "not starting with '.' or '-'."
        )


def split_repository_path(repository_path: str) -> tuple[str | None, str]:
    """Split ``[registry/][namespace/]repo`` into (namespace, repository), as Prefect does."""
    parts = repository_path.split("/", 2)
    if len(parts) == 3 or (len(parts) == 2 and ("." in parts[0] or ":" in parts[0])):
        return "/".join(parts[:-1]), parts[-1]
    if len(parts) == 2:
        return parts[0], parts[1]
    return None, parts[0]


def qualify_image_name(image_name: str, default_namespace: str | None) -> str:
    """Validate ``image_name`` and prefix ``default_namespace`` when it has none."""
    validate_image_name(image_name)
    namespace, repository = split_repository_path(image_name)
    namespace = namespace or default_namespace
    return "/".join(part for part in (namespace, repository) if part)


def registry_of(image_name: str) -> str | None:
    """The registry host of a qualified image name, or None for Docker Hub."""
    first, _, rest = image_name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return first
    return None


def default_tag(now: datetime | None = None) -> str:
    """A UTC timestamp slug, such as ``2026-08-21t16-27-33-123456-00-00``."""
    stamp = (now or datetime.now(timezone.utc)).isoformat().lower()
    return re.sub(r"[^a-z0-9]+", "-", stamp).strip("-")


def split_reference(reference: str) -> tuple[str, str]:
    """(name, tag) of an image reference; ``latest`` when it has no tag."""
    name, _, tag = reference.rpartition(":")
    if not name or "/" in tag:
        return reference, "latest"
    return name, tag
