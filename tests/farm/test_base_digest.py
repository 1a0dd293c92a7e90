"""A base image re-pushed under the same tag is a miss for a build that pulls, and the rebuild uses it.

On the real farm: the base is built on one engine and pushed to the htpasswd
registry; builds run on either host and pull it with the farm's login.
"""

from __future__ import annotations

import contextlib
import io
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from dockyard.tasks import client
from tests.farm.conftest import Registry, WorkerProcess

TIMEOUT_S = 120


def push_base(engine: docker.DockerClient, base_image: str, reference: str, version: str, registry: Registry) -> list[str]:
    """Build a base carrying ``version`` from the farm's base image, push it under ``reference``; its layers."""
    dockerfile = f"FROM {base_image}\nRUN echo {version} > /base-version\n".encode()
    image, _ = engine.images.build(fileobj=io.BytesIO(dockerfile), tag=reference, pull=False, network_mode="none", rm=True)
    name, _, tag = reference.rpartition(":")
    auth = {"username": registry.username, "password": registry.password}
    for event in engine.api.push(name, tag=tag, auth_config=auth, stream=True, decode=True):
        assert "error" not in event, event
    layers: list[str] = image.attrs["RootFS"]["Layers"]
    return layers


@pytest.fixture
def base_repo(repo: str, engines: list[docker.DockerClient]) -> Iterator[str]:
    """A base image repository of the test's own; removed from every engine afterwards."""
    name = f"{repo}-base"
    yield name
    for engine in engines:
        children = [*engine.images.list(name=repo), *engine.images.list(filters={"dangling": True, "label": "io.dockyard.builder=dockyard"})]
        for image in [*children, *engine.images.list(name=name)]:  # the images built on the base first
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                engine.images.remove(image.id, force=True)


def test_a_repushed_base_is_a_miss_and_the_rebuild_uses_the_new_base(
    tmp_path: Path, repo: str, base_repo: str, base_image: str, registry: Registry,
    engines: list[docker.DockerClient], farm_workers: list[WorkerProcess],
) -> None:
    base = f"{base_repo}:1"
    first_layers = push_base(engines[0], base_image, base, f"one-{uuid.uuid4()}", registry)
    context = tmp_path / "app"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {base}\nCOPY app.txt /app.txt\n")
    (context / "app.txt").write_text(f"{uuid.uuid4()}\n")

    first = client.build(repo, path=str(context), tag="app", timeout_s=TIMEOUT_S)
    assert first["cache"] == "built"
    assert client.build(repo, path=str(context), tag="app", timeout_s=TIMEOUT_S)["cache"] == "hit", "unchanged base: a hit"

    second_layers = push_base(engines[0], base_image, base, f"two-{uuid.uuid4()}", registry)
    assert second_layers[-1] != first_layers[-1]
    rebuilt = client.build(repo, path=str(context), tag="app", timeout_s=TIMEOUT_S)  # pull=True, the default
    assert rebuilt["cache"] == "built", "the base under the same tag is another image now: a miss"
    assert rebuilt["image_id"] != first["image_id"]
    holder = engines[[each.host_id for each in farm_workers].index(rebuilt["host"])]
    layers = holder.images.get(rebuilt["image_id"]).attrs["RootFS"]["Layers"]
    assert layers[: len(second_layers)] == second_layers, "the rebuild stands on the new base"
    assert holder.images.get(f"{repo}:app").id == rebuilt["image_id"]

    without_pull = client.build(repo, path=str(context), tag="nopull", pull=False, timeout_s=TIMEOUT_S)
    assert without_pull["cache"] == "built", "pull=False is another key (its base named by tag)"
