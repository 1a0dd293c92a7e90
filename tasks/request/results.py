"""The result dicts of build and push: prefect-docker's keys, and dockyard's, each made in one place."""

from __future__ import annotations

from typing import Literal, TypedDict, cast, get_args

from dockyard.tasks.errors import InvalidInput
from dockyard.tasks.request.spec import BuildOptions, PushRequest

CacheSource = Literal["hit", "built", "joined"]


def cache_source(value: object) -> CacheSource:
    """``value`` as a cache outcome; ``InvalidInput`` if it is none of them."""
    for source in get_args(CacheSource):
        if value == source:
            return source  # type: ignore[no-any-return]
    raise InvalidInput(f"Unknown cache outcome {value!r}; expected one of {get_args(CacheSource)}.")


class BuildDockerImageResult(TypedDict):
    """Result of ``build_docker_image``: prefect-docker's keys."""

    image_name: str
    tag: str
    image: str
    image_id: str
    additional_tags: list[str] | None


class FarmBuildResult(BuildDockerImageResult, total=False):
    """A build on the farm: also the host holding the image, the cache outcome and the time taken."""

    host: str
    cache: CacheSource
    duration_s: float


class PushDockerImageResult(TypedDict, total=False):
    """Result of ``push_docker_image``: prefect-docker's keys and the pushed ``digest``."""

    image_name: str
    tag: str | None
    image: str
    additional_tags: list[str] | None
    digest: str | None


class FarmPushResult(PushDockerImageResult, total=False):
    """A push on the farm: also the host it ran on, the cache outcome and the time taken."""

    host: str
    cache: CacheSource
    duration_s: float


def build_result(options: BuildOptions, image_id: str) -> BuildDockerImageResult:
    """prefect-docker's build result for ``options``."""
    return {
        "image_name": options.image_name,
        "tag": options.tag,
        "image": f"{options.image_name}:{options.tag}",
        "image_id": image_id,
        "additional_tags": list(options.additional_tags),
    }


def farm_build_result(options: BuildOptions, image_id: str, *, host: str, cache: CacheSource) -> FarmBuildResult:
    """The build result with the host holding the image and how the cache answered."""
    result = cast(FarmBuildResult, build_result(options, image_id))
    result["host"], result["cache"] = host, cache
    return result


def push_result(request: PushRequest, digest: str | None) -> PushDockerImageResult:
    """prefect-docker's push result for ``request``, with the digest of its tag."""
    return {
        "image_name": request.image_name,
        "tag": request.tag,
        "image": f"{request.image_name}:{request.tag}",
        "additional_tags": list(request.additional_tags),
        "digest": digest,
    }


def farm_push_result(request: PushRequest, digest: str | None, *, host: str, cache: CacheSource) -> FarmPushResult:
    """The push result with the host it ran on and how the cache answered."""
    result = cast(FarmPushResult, push_result(request, digest))
    result["host"], result["cache"] = host, cache
    return result


def reference_build_result(result: BuildDockerImageResult) -> BuildDockerImageResult:
    """Only prefect-docker's keys of a build result."""
    return {
        "image_name": result["image_name"], "tag": result["tag"], "image": result["image"],
        "image_id": result["image_id"], "additional_tags": result["additional_tags"],
    }


def reference_push_result(result: PushDockerImageResult) -> PushDockerImageResult:
    """Only prefect-docker's keys of a push result (and ``digest``)."""
    return {
        "image_name": result.get("image_name", ""), "tag": result.get("tag"), "image": result.get("image", ""),
        "additional_tags": result.get("additional_tags"), "digest": result.get("digest"),
    }
