"""dockyard.tasks.request.cache_key: what is and is not part of a cache key."""

from __future__ import annotations

import math
from typing import Any

import pytest

from dockyard.tasks.request.cache_key import build_key, call_key, canonical, push_key
from dockyard.tasks.errors import InvalidInput

BUILD = {
    "context_digest": "sha256:ctx",
    "dockerfile_digest": "sha256:df",
    "build_backend": "docker-py",
    "build_kwargs": {"buildargs": {"A": "1"}, "pull": True},
}
PUSH = {"image_id": "sha256:img", "repository": "reg.io/team/app", "tags": ["v1"], "registry": "reg.io"}


def test_canonical_form_ignores_key_order() -> None:
    assert canonical({"b": 1, "a": [1, {"d": 2, "c": 3}]}) == b'{"a":[1,{"c":3,"d":2}],"b":1}'


@pytest.mark.parametrize("value", [{1, 2}, math.nan, object(), b"bytes"], ids=["set", "nan", "object", "bytes"])
def test_what_json_cannot_say_is_refused(value: object) -> None:
    with pytest.raises(InvalidInput, match="JSON-serialisable"):
        canonical({"x": value})


def test_call_key_leaves_out_credentials_and_ignore_cache() -> None:
    base = call_key("op", [1], {"a": 1})
    assert call_key("op", [1], {"a": 1, "credentials": {"password": "p"}, "ignore_cache": True}) == base


@pytest.mark.parametrize(
    "other",
    [("op2", [1], {"a": 1}, None), ("op", [2], {"a": 1}, None), ("op", [1], {"a": 2}, None), ("op", [1], {"a": 1}, {"f": "x"})],
    ids=["operation", "args", "kwargs", "content"],
)
def test_call_key_changes_with_what_changes_the_result(other: tuple[Any, ...]) -> None:
    assert call_key(*other) != call_key("op", [1], {"a": 1})


@pytest.mark.parametrize("ignored", ["path", "quiet", "rm", "forcerm", "decode", "timeout", "stream"])
def test_build_key_ignores_options_that_do_not_change_the_image(ignored: str) -> None:
    changed = {**BUILD, "build_kwargs": {**BUILD["build_kwargs"], ignored: "anything"}}  # type: ignore[dict-item]
    assert build_key(**changed) == build_key(**BUILD)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "change",
    [
        {"context_digest": "sha256:other"},
        {"dockerfile_digest": "sha256:other"},
        {"build_backend": "buildx"},
        {"build_kwargs": {"buildargs": {"A": "2"}, "pull": True}},
        {"build_kwargs": {"buildargs": {"A": "1"}, "pull": True, "target": "prod"}},
        {"build_kwargs": {"buildargs": {"A": "1"}, "pull": False}},
    ],
    ids=["context", "dockerfile", "backend", "build arg", "target", "pull"],
)
def test_build_key_changes_with_what_changes_the_image(change: dict[str, object]) -> None:
    assert build_key(**{**BUILD, **change}) != build_key(**BUILD)  # type: ignore[arg-type]


def test_build_key_is_a_sha256_hex_digest() -> None:
    key = build_key(**BUILD)  # type: ignore[arg-type]
    assert len(key) == 64 and int(key, 16) >= 0


@pytest.mark.parametrize(
    "change",
    [{"image_id": "sha256:x"}, {"repository": "reg.io/team/b"}, {"tags": ["v1", "latest"]}, {"registry": None}],
    ids=["image", "repository", "tags", "registry"],
)
def test_push_key_changes_with_image_destination_and_tags(change: dict[str, object]) -> None:
    assert push_key(**{**PUSH, **change}) != push_key(**PUSH)  # type: ignore[arg-type]
