"""A push in a chain: its first argument is the build's result, whose name, tags, image and host it takes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dockyard.tasks.errors import InvalidInput


def build_result_of(args: Sequence[Any], kwargs: Mapping[str, Any]) -> object:
    """The build result a push message carries: in a chain, its first argument."""
    return args[0] if args else kwargs.get("build_result")


def holding_host(args: Sequence[Any], kwargs: Mapping[str, Any]) -> str | None:
    """The host named by the build result given to a push."""
    build_result = build_result_of(args, kwargs)
    if isinstance(build_result, Mapping) and isinstance(build_result.get("host"), str):
        return str(build_result["host"])
    return None


def push_arguments(build_result: object, params: Mapping[str, Any]) -> dict[str, Any]:
    """A push's arguments: in a chain, name, tags and the image id default to the build's result."""
    merged = dict(params)
    if build_result is not None:
        if not isinstance(build_result, Mapping):
            raise InvalidInput("build_result must be the dict a build returned.")
        merged["image_name"] = merged.get("image_name") or build_result.get("image_name")
        merged["tag"] = merged.get("tag") or build_result.get("tag")
        if merged.get("additional_tags") is None:
            merged["additional_tags"] = build_result.get("additional_tags")
        if merged.get("image_id") is None and merged["image_name"] == build_result.get("image_name"):
            merged["image_id"] = build_result.get("image_id")  # push the image this build made, not its tag
    if not isinstance(merged.get("image_name"), str) or not merged["image_name"]:
        raise InvalidInput("push needs image_name, or a build result to take it from.")
    return merged


def message_push_arguments(args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``push_arguments`` of a push message as the router sees it (positional build result or keyword)."""
    params = {name: value for name, value in kwargs.items() if name != "build_result"}
    return push_arguments(build_result_of(args, kwargs), params)
