"""A push pushes the image its build made, and a push hit is never answered once the tag has moved.

On the real farm: two hosts, the htpasswd registry, images compared by the
digest the registry serves and the engines' RepoDigests.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import docker
from celery.canvas import Signature

from dockyard.tasks import client
from tests.farm.farm_helpers import team_host_queue
from tests.farm.conftest import Registry, WorkerProcess

TIMEOUT_S = 120


def context_saying(root: Path, base_image: str, text: str) -> Path:
    """A one-file context whose image carries ``text``."""
    root.mkdir(parents=True)
    (root / "said.txt").write_text(text + "\n")
    (root / "Dockerfile").write_text(f"FROM {base_image}\nCOPY said.txt /said.txt\n")
    return root


def served(registry: Registry, repo: str, tag: str) -> str | None:
    return registry.manifest_digest(repo.removeprefix(registry.url + "/"), tag)


def build_on(host: str, repo: str, context: Path, tag: str) -> Signature:
    return client.build_signature(repo, path=str(context), tag=tag).set(queue=team_host_queue(host))


def test_a_rollback_to_an_earlier_image_is_pushed_again(
    tmp_path: Path, repo: str, base_image: str, registry: Registry, farm_workers: list[WorkerProcess],
) -> None:
    """X, then Y, then X to ``live`` through the caller's fast path: the registry serves X at the end."""
    x = context_saying(tmp_path / "x", base_image, f"x {uuid.uuid4()}")
    y = context_saying(tmp_path / "y", base_image, f"y {uuid.uuid4()}")

    def build_and_push(context: Path) -> dict[str, Any]:
        client.build(repo, path=str(context), tag="live", timeout_s=TIMEOUT_S)
        return dict(client.push(repo, tag="live", credentials=registry.credentials, timeout_s=TIMEOUT_S))

    first_x = build_and_push(x)
    assert served(registry, repo, "live") == first_x["digest"]
    pushed_y = build_and_push(y)
    assert served(registry, repo, "live") == pushed_y["digest"] != first_x["digest"]
    again_x = build_and_push(x)
    assert again_x["cache"] != "hit", "the cached push of X no longer holds: live names Y"
    assert served(registry, repo, "live") == again_x["digest"] == first_x["digest"]
    assert client.push(repo, tag="live", credentials=registry.credentials)["cache"] == "hit", "now it holds again"


def test_a_rollback_through_chains_with_the_push_cache_warm_on_another_host(
    tmp_path: Path, repo: str, base_image: str, registry: Registry, farm_workers: list[WorkerProcess],
) -> None:
    """The same sequence as chains, X pushed from one host and Y from the other: the worker-side hit is checked too."""
    first, second = (each.host_id for each in farm_workers)
    x = context_saying(tmp_path / "x", base_image, f"x {uuid.uuid4()}")
    y = context_saying(tmp_path / "y", base_image, f"y {uuid.uuid4()}")

    def chain_on(host: str, context: Path) -> dict[str, Any]:
        chained = build_on(host, repo, context, "live") | client.push_signature(credentials=registry.credentials)
        return dict(chained.apply_async().get(timeout=TIMEOUT_S))

    first_x = chain_on(first, x)
    assert first_x["host"] == first
    pushed_y = chain_on(second, y)
    assert pushed_y["host"] == second and served(registry, repo, "live") == pushed_y["digest"]
    again_x = chain_on(second, x)  # the build is a hit held by the first host; its push cache entry is warm
    assert again_x["host"] == first and again_x["cache"] != "hit"
    assert served(registry, repo, "live") == again_x["digest"] == first_x["digest"]


def repo_digests(engine: docker.DockerClient, image_id: str) -> list[str]:
    return list(engine.images.get(image_id).attrs.get("RepoDigests") or [])


def test_a_chained_push_pushes_its_own_build_when_the_tag_moved_on_the_same_host(
    tmp_path: Path, repo: str, base_image: str, registry: Registry,
    engines: list[docker.DockerClient], farm_workers: list[WorkerProcess],
) -> None:
    """Two builds of one ``name:tag`` on one host; the first's chained push runs after the second build
    (its push message is sent with the first build's result, exactly as the chain sends it)."""
    host = farm_workers[0].host_id
    engine = engines[0]
    first = build_on(host, repo, context_saying(tmp_path / "a", base_image, f"a {uuid.uuid4()}"), "same").apply_async().get(timeout=TIMEOUT_S)
    second = build_on(host, repo, context_saying(tmp_path / "b", base_image, f"b {uuid.uuid4()}"), "same").apply_async().get(timeout=TIMEOUT_S)
    assert first["host"] == second["host"] == host and first["image_id"] != second["image_id"]
    assert engine.images.get(f"{repo}:same").id == second["image_id"], "the tag now names the second image"

    push = client.push_signature(credentials=registry.credentials).clone(args=(first,))
    pushed = push.apply_async().get(timeout=TIMEOUT_S)
    assert served(registry, repo, "same") == pushed["digest"]
    assert f"{repo}@{pushed['digest']}" in repo_digests(engine, first["image_id"]), "the first build's image was pushed"
    assert f"{repo}@{pushed['digest']}" not in repo_digests(engine, second["image_id"])
