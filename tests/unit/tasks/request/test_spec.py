"""dockyard.tasks.request.spec: BuildOptions, BuildSpec and PushRequest, the one validator of each request.

Every refusal is an ``InvalidInput`` from ``parse``, whoever calls it (the
caller before sending, the worker on the message as received).
"""

from __future__ import annotations

from typing import Any

import pytest

from dockyard.tasks.errors import InvalidInput
from dockyard.tasks.request.spec import (
    MULTI_PLATFORM_NEEDS_PUSH,
    BuildOptions,
    BuildSpec,
    Credentials,
    PushRequest,
    Sealed,
    auto_dockerfile_bytes,
    dockerfile_digest,
    platforms_of,
    spec_key,
)

CONTEXT = "sha256:" + "c" * 64
DOCKERFILE = dockerfile_digest(b"FROM scratch\n")
OPTIONS: dict[str, Any] = {"image_name": "reg.io/team/app", "tag": "v1"}


def keyed(**fields: Any) -> dict[str, Any]:
    """A BuildSpec message with the key of its content, as ``prepare_build`` makes it."""
    message: dict[str, Any] = {
        **OPTIONS,
        "dockerfile_digest": DOCKERFILE,
        "context_digest": CONTEXT,
        "context_size": 10240,
        **fields,
    }
    message["key"] = spec_key(BuildSpec.model_construct(**message))
    return message


def auto_message(lines: list[str]) -> dict[str, Any]:
    return keyed(dockerfile="auto", dockerfile_lines=lines, dockerfile_digest=dockerfile_digest(auto_dockerfile_bytes(lines)))


# BuildOptions


def test_build_options_defaults_and_tags() -> None:
    options = BuildOptions.parse({**OPTIONS, "additional_tags": ["latest", "1.0"]})
    assert (options.dockerfile, options.build_backend, options.build_kwargs, options.ignore_cache) == (
        "Dockerfile", "docker-py", {}, False,
    )
    assert options.tags == ["v1", "latest", "1.0"]
    assert options.references == ["reg.io/team/app:v1", "reg.io/team/app:latest", "reg.io/team/app:1.0"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"tag": "has space"}, "Invalid Docker tag"),
        ({"tag": ".hidden"}, "Invalid Docker tag"),
        ({"additional_tags": ["ok", "bad tag"]}, "Invalid Docker tag"),
        ({"additional_tags": "latest"}, "additional_tags"),
        ({"image_name": "Team/App"}, "Invalid Docker image name"),
        ({"image_name": "my app"}, "cannot contain spaces"),
        ({"image_name": "app:v1"}, "names a tag"),
        ({"dockerfile": "/etc/Dockerfile"}, "inside the build context"),
        ({"dockerfile": "../Dockerfile"}, "inside the build context"),
        ({"dockerfile": "sub\\Dockerfile"}, "inside the build context"),
        ({"dockerfile": ""}, "inside the build context"),
        ({"build_backend": "kaniko"}, "Invalid build_backend"),
        ({"build_kwargs": {"labels": {"a": 1}}}, "labels must be a mapping of strings"),
        ({"build_kwargs": {"labels": ["a"]}}, "labels must be a mapping of strings"),
        ({"build_kwargs": {"path": 3}}, "path must be a string"),
        ({"build_kwargs": {"buildargs": {"A": {1, 2}}}}, "JSON-serialisable"),
        ({"ignore_cache": "yes"}, "ignore_cache"),
        ({"tag": 1}, "tag"),
        ({"surprise": True}, "surprise"),
    ],
    ids=lambda value: str(value)[:40],
)
def test_build_options_refuse(change: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        BuildOptions.parse({**OPTIONS, **change})


def test_build_options_are_frozen() -> None:
    options = BuildOptions.parse(OPTIONS)
    with pytest.raises(ValueError):
        options.tag = "v2"  # type: ignore[misc]


def test_several_buildx_platforms_need_push() -> None:
    kwargs = {"platforms": ["linux/amd64", "linux/arm64"]}
    with pytest.raises(InvalidInput, match="require push=True"):
        BuildOptions.parse({**OPTIONS, "build_backend": "buildx", "build_kwargs": kwargs})
    BuildOptions.parse({**OPTIONS, "build_backend": "buildx", "build_kwargs": {**kwargs, "push": True}})
    BuildOptions.parse({**OPTIONS, "build_backend": "buildx", "build_kwargs": {"platform": "linux/amd64"}})


def test_the_multi_platform_message_is_dockyards_own_not_pydantics() -> None:
    with pytest.raises(InvalidInput) as caught:
        BuildOptions.parse({**OPTIONS, "build_backend": "buildx", "build_kwargs": {"platform": ["a/b", "c/d"]}})
    assert str(caught.value) == MULTI_PLATFORM_NEEDS_PUSH


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, None),
        ({"platform": "linux/amd64"}, ["linux/amd64"]),
        ({"platform": ["linux/amd64", "linux/arm64"]}, ["linux/amd64", "linux/arm64"]),
        ({"platforms": ["linux/arm64"], "platform": "linux/amd64"}, ["linux/arm64"]),
    ],
)
def test_platforms_of(kwargs: dict[str, Any], expected: list[str] | None) -> None:
    assert platforms_of(kwargs) == expected


def test_platforms_must_be_strings() -> None:
    with pytest.raises(ValueError, match="list of strings"):
        platforms_of({"platforms": "linux/amd64"})


# BuildSpec


def test_a_spec_round_trips_through_its_message() -> None:
    spec = BuildSpec.parse(keyed(additional_tags=["latest"], build_kwargs={"buildargs": {"A": "1"}}))
    assert BuildSpec.parse(spec.model_dump()) == spec
    assert spec.key == spec_key(spec)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"tag": "has space"}, r"^Invalid Docker tag 'has space':"),
        ({"additional_tags": "latest"}, r"^additional_tags: Input should be a valid list"),
        ({"additional_tags": ["ok", "not ok"]}, r"^Invalid Docker tag 'not ok':"),
        ({"image_name": "UPPER/case"}, r"^Invalid Docker image name 'UPPER/case': repository part 'UPPER' must be lowercase"),
        ({"context_digest": "sha256:short"}, r"^context_digest: String should match pattern"),
        ({"dockerfile_digest": "md5:" + "0" * 32}, r"^dockerfile_digest: String should match pattern"),
        ({"context_size": -1}, r"^context_size: Input should be greater than or equal to 0"),
        ({"context_size": "10"}, r"^context_size: Input should be a valid integer"),
        ({"key": "not-a-key"}, r"^key: String should match pattern"),
        ({"unknown": 1}, r"^unknown: Extra inputs are not permitted"),
    ],
    ids=lambda value: str(value)[:40],
)
def test_a_hand_made_spec_is_refused(change: dict[str, Any], reason: str) -> None:
    with pytest.raises(InvalidInput, match=reason):
        BuildSpec.parse({**keyed(), **change})


@pytest.mark.parametrize(
    "change",
    [
        {"context_digest": "sha256:" + "d" * 64},
        {"dockerfile_digest": dockerfile_digest(b"FROM busybox\n")},
        {"build_backend": "buildx"},
        {"build_kwargs": {"buildargs": {"A": "2"}}},
    ],
    ids=["context", "dockerfile", "backend", "options"],
)
def test_a_key_that_does_not_match_the_content_is_refused(change: dict[str, Any]) -> None:
    message = keyed()
    with pytest.raises(InvalidInput, match="key does not match"):
        BuildSpec.parse({**message, **change})
    assert BuildSpec.parse(keyed(**change)).key != message["key"], "its own key is another"


def test_the_key_is_content_only_not_name_or_tags() -> None:
    message = keyed()
    renamed = {**message, "image_name": "other/name", "tag": "v9", "additional_tags": ["x"], "ignore_cache": True}
    assert BuildSpec.parse(renamed).key == message["key"]


def test_auto_dockerfile_lines_must_match_their_digest() -> None:
    message = auto_message(["FROM python:3.11-slim", "COPY . /opt/prefect/app/"])
    assert BuildSpec.parse(message).dockerfile_lines == message["dockerfile_lines"]
    forged = {**message, "dockerfile_lines": ["FROM evil", "COPY . /opt/prefect/app/"]}
    with pytest.raises(InvalidInput, match="dockerfile_digest does not match dockerfile_lines"):
        BuildSpec.parse(forged)


def test_dockerfile_lines_go_only_with_auto_and_auto_needs_them() -> None:
    message = auto_message(["FROM scratch"])
    with pytest.raises(InvalidInput, match="only with dockerfile='auto'"):
        BuildSpec.parse({**message, "dockerfile": "Dockerfile"})
    with pytest.raises(InvalidInput, match="needs dockerfile_lines"):
        BuildSpec.parse({**message, "dockerfile_lines": None})


def test_sealed_secrets_and_their_ids_go_together() -> None:
    with pytest.raises(InvalidInput, match="go together"):
        BuildSpec.parse(keyed(build_backend="buildx", sealed_secrets={"sealed": "x"}))
    with pytest.raises(InvalidInput, match="go together"):
        BuildSpec.parse(keyed(build_backend="buildx", secret_ids=["token"]))
    with pytest.raises(InvalidInput, match="go together"):
        BuildSpec.parse(keyed(build_backend="buildx", sealed_secrets={"sealed": "x"}, secret_ids=["token"]))
    with pytest.raises(InvalidInput, match="go together"):
        BuildSpec.parse(keyed(build_backend="buildx", secrets_owner="default"))
    spec = BuildSpec.parse(keyed(build_backend="buildx", sealed_secrets={"sealed": "x"}, secret_ids=["token"], secrets_owner="default"))
    assert spec.key != BuildSpec.parse(keyed(build_backend="buildx")).key, "secret ids are in the key"
    theirs = BuildSpec.parse(keyed(build_backend="buildx", sealed_secrets={"sealed": "x"}, secret_ids=["token"], secrets_owner="team-b"))
    assert theirs.key != spec.key, "another team's secrets of the same ids are another build"


def test_a_secrets_owner_is_a_team_name() -> None:
    with pytest.raises(InvalidInput, match="secrets_owner"):
        BuildSpec.parse(keyed(build_backend="buildx", sealed_secrets={"sealed": "x"}, secret_ids=["token"], secrets_owner="Team.B"))


def test_clear_secrets_in_build_kwargs_are_refused() -> None:
    with pytest.raises(InvalidInput, match="travel sealed"):
        BuildSpec.parse(keyed(build_backend="buildx", build_kwargs={"secrets": ["id=a,src=/etc/passwd"]}))


# PushRequest


def test_push_request_defaults_to_latest() -> None:
    request = PushRequest.parse({"image_name": "reg.io/team/app"})
    assert request.tag is None and request.reference == "reg.io/team/app:latest"
    assert request.tags == ["latest"]
    tagged = PushRequest.parse({"image_name": "reg.io/team/app", "tag": "v1", "additional_tags": ["a", "b"]})
    assert tagged.tags == ["v1", "a", "b"] and tagged.reference == "reg.io/team/app:v1"


def test_push_credentials_sealed_or_clear() -> None:
    sealed = PushRequest.parse({"image_name": "app", "credentials": {"sealed": "token"}})
    assert isinstance(sealed.credentials, Sealed)
    clear = PushRequest.parse({"image_name": "app", "credentials": {"username": "u", "password": "p"}})
    assert isinstance(clear.credentials, Credentials)
    assert (clear.credentials.registry_url, clear.credentials.reauth) == (None, True)


@pytest.mark.parametrize(
    ("credentials", "message"),
    [
        ({"username": "u", "password": "p", "email": "e"}, "Unknown credentials keys"),
        ("u:p", "credentials must be a mapping"),
        ({"username": "u", "password": ""}, "password"),
        ({"username": "u"}, "password"),
        ({"sealed": "x", "username": "u"}, "Unknown credentials keys"),
    ],
)
def test_push_refuses_bad_credentials(credentials: object, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        PushRequest.parse({"image_name": "app", "credentials": credentials})


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"tag": "bad tag"}, r"^Invalid Docker tag 'bad tag':"),
        ({"additional_tags": "v2"}, r"^additional_tags: Input should be a valid list"),
        ({"image_name": "Bad"}, r"^Invalid Docker image name 'Bad': repository part 'Bad' must be lowercase"),
        ({"build_backend": "podman"}, r"^Invalid build_backend 'podman'"),
        ({"digest": "x"}, r"^digest: Extra inputs are not permitted"),
    ],
    ids=lambda value: str(value),
)
def test_push_request_refuses(change: dict[str, Any], reason: str) -> None:
    with pytest.raises(InvalidInput, match=reason):
        PushRequest.parse({"image_name": "app", **change})


def test_a_refusal_never_echoes_the_password() -> None:
    with pytest.raises(InvalidInput, match=r"^Unknown credentials keys: \['x'\]") as caught:  # refused for its credentials
        PushRequest.parse({"image_name": "app", "credentials": {"username": "u", "password": "hunter2", "x": 1}})
    assert "hunter2" not in str(caught.value)
