"""dockyard.tasks.request.results: the build and push result dicts, prefect-docker's keys and dockyard's."""

from __future__ import annotations

import pytest

from dockyard.tasks.errors import InvalidInput
from dockyard.tasks.request.results import (
    build_result,
    cache_source,
    farm_build_result,
    farm_push_result,
    push_result,
    reference_build_result,
    reference_push_result,
)
from dockyard.tasks.request.spec import BuildOptions, PushRequest

IMAGE = "sha256:" + "a" * 64
REFERENCE_BUILD_KEYS = {"image_name", "tag", "image", "image_id", "additional_tags"}
REFERENCE_PUSH_KEYS = {"image_name", "tag", "image", "additional_tags"}


@pytest.mark.parametrize("source", ["hit", "built", "joined"])
def test_cache_source_takes_the_three_outcomes(source: str) -> None:
    assert cache_source(source) == source


@pytest.mark.parametrize("source", ["forwarded", "HIT", "", None, 1])
def test_cache_source_refuses_anything_else(source: object) -> None:
    with pytest.raises(InvalidInput, match="Unknown cache outcome"):
        cache_source(source)


def test_build_result_has_exactly_prefect_dockers_keys() -> None:
    options = BuildOptions.parse({"image_name": "reg.io/team/app", "tag": "v1", "additional_tags": ["latest"]})
    result = build_result(options, IMAGE)
    assert result == {
        "image_name": "reg.io/team/app", "tag": "v1", "image": "reg.io/team/app:v1",
        "image_id": IMAGE, "additional_tags": ["latest"],
    }
    result["additional_tags"].append("mutated")  # type: ignore[union-attr]
    assert options.additional_tags == ["latest"], "the result does not share the options' list"


def test_farm_build_result_adds_host_and_cache_only() -> None:
    options = BuildOptions.parse({"image_name": "app", "tag": "v1"})
    result = farm_build_result(options, IMAGE, host="h2", cache="joined")
    assert set(result) == REFERENCE_BUILD_KEYS | {"host", "cache"}
    assert (result["host"], result["cache"], result["additional_tags"]) == ("h2", "joined", [])
    assert reference_build_result({**result, "duration_s": 1.5}) == build_result(options, IMAGE)  # type: ignore[typeddict-item]


def test_push_result_has_prefect_dockers_keys_and_the_digest() -> None:
    request = PushRequest.parse({"image_name": "reg.io/team/app", "tag": "v1", "additional_tags": ["a"]})
    assert push_result(request, "sha256:d") == {
        "image_name": "reg.io/team/app", "tag": "v1", "image": "reg.io/team/app:v1",
        "additional_tags": ["a"], "digest": "sha256:d",
    }


def test_farm_push_result_and_back() -> None:
    request = PushRequest.parse({"image_name": "app", "tag": "v1"})
    result = farm_push_result(request, None, host="h1", cache="hit")
    assert set(result) == REFERENCE_PUSH_KEYS | {"digest", "host", "cache"}
    assert result["digest"] is None
    assert reference_push_result({**result, "duration_s": 0.2}) == push_result(request, None)  # type: ignore[typeddict-item]


def test_reference_push_result_of_a_partial_result() -> None:
    assert reference_push_result({"image_name": "app"}) == {
        "image_name": "app", "tag": None, "image": "", "additional_tags": None, "digest": None,
    }


def test_results_never_carry_credentials() -> None:
    request = PushRequest.parse({"image_name": "app", "tag": "v1", "credentials": {"username": "u", "password": "p"}})
    assert "credentials" not in farm_push_result(request, "sha256:d", host="h1", cache="built")
