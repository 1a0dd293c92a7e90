"""push_docker_image against the farm's authenticated registry."""

from __future__ import annotations

from pathlib import Path

import docker
import pytest

from dockyard.config.settings import Settings
from dockyard.tasks.local_steps import build_docker_image
from dockyard.tasks.local_steps import push_docker_image
from dockyard.tasks.local_steps import build_image
from dockyard.tasks.errors import PushError, RegistryAuthError, RegistryUnavailable
from dockyard.tasks.local_steps import push_image
from tests.farm.conftest import Registry


def repository_path(repo: str, registry: Registry) -> str:
    return repo.removeprefix(registry.url + "/")


def test_push_with_credentials_reaches_the_registry(project: Path, repo: str, registry: Registry, settings: Settings) -> None:
    build_docker_image(image_name=repo, tag="v1")
    anonymous = settings.model_copy(update={"registry_password": None})
    result = push_image(repo, tag="v1", credentials=registry.credentials, settings=anonymous)
    assert result["image"] == f"{repo}:v1" and result["additional_tags"] == []
    assert result["digest"] == registry.manifest_digest(repository_path(repo, registry), "v1")
    assert result["digest"] and result["digest"].startswith("sha256:")


def test_push_without_credentials_uses_the_workers_registry_login(project: Path, repo: str, registry: Registry) -> None:
    build_docker_image(image_name=repo, tag="v2")
    result = push_docker_image(image_name=repo, tag="v2")
    assert result["digest"] == registry.manifest_digest(repository_path(repo, registry), "v2")


def test_push_pushes_each_additional_tag(project: Path, repo: str, registry: Registry) -> None:
    built = build_docker_image(image_name=repo, tag="main", additional_tags=["v1", "latest"])
    result = push_docker_image(
        image_name=built["image_name"], tag=built["tag"], additional_tags=built["additional_tags"],
        credentials=registry.credentials,
    )
    digests = {t: registry.manifest_digest(repository_path(repo, registry), t) for t in ("main", "v1", "latest")}
    assert set(digests.values()) == {result["digest"]}


def test_an_error_event_stops_the_push(project: Path, repo: str, registry: Registry) -> None:
    build_docker_image(image_name=repo, tag="exists")
    with pytest.raises(OSError) as raised:
        push_docker_image(image_name=repo, tag="missing", additional_tags=["exists"], credentials=registry.credentials)
    assert isinstance(raised.value, PushError)
    assert registry.manifest_digest(repository_path(repo, registry), "exists") is None


@pytest.mark.parametrize("bad_name", ["my image", "a\tb"])
def test_invalid_image_name_pushes_nothing(bad_name: str) -> None:
    with pytest.raises(ValueError, match="Invalid Docker image name"):
        push_docker_image(image_name=bad_name, tag="x")


def test_wrong_registry_password_is_an_auth_error(project: Path, repo: str, registry: Registry, settings: Settings) -> None:
    build_docker_image(image_name=repo, tag="v1")
    wrong = {**registry.credentials, "password": "not-the-password"}
    with pytest.raises(RegistryAuthError):
        push_image(repo, tag="v1", credentials=wrong, settings=settings)
    assert registry.manifest_digest(repository_path(repo, registry), "v1") is None


def test_unreachable_registry_is_a_transient_error(project: Path, settings: Settings, engine: docker.DockerClient) -> None:
    name = "127.0.0.1:5999/nowhere/app"
    build_image(name, tag="v1", settings=settings)
    try:
        with pytest.raises(RegistryUnavailable):
            push_image(name, tag="v1", settings=settings)
    finally:
        engine.images.remove(f"{name}:v1")


def test_push_of_an_image_this_host_lacks_is_a_push_error(repo: str, settings: Settings) -> None:
    with pytest.raises(PushError):
        push_image(repo, tag="never-built", settings=settings)
