"""Two hosts, one deduplicated build: counted from the Docker engines, not from dockyard."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import docker
import pytest
import redis

from dockyard.config.settings import Settings
from dockyard.tasks import client
from dockyard.tasks.cache.single_flight import build_cache
from dockyard.tasks.prepare import prepare_build
from tests.farm.farm_helpers import team_host_queue
from tests.farm.conftest import Registry, WorkerProcess
from tests.farm.farm_helpers import container_creates, image_id_on_any, settle, slow_context

TIMEOUT_S = 120


def engine_of(host: str, farm_workers: list[WorkerProcess], engines: list[docker.DockerClient]) -> docker.DockerClient:
    return engines[[each.host_id for each in farm_workers].index(host)]


def received_builds(worker: WorkerProcess) -> int:
    return worker.log().count("Task dockyard.build_docker_image[")


def test_sixteen_identical_requests_over_two_hosts_build_once(
    tmp_path: Path, repo: str, base_image: str, registry: Registry,
    engines: list[docker.DockerClient], farm_workers: list[WorkerProcess],
) -> None:
    context = slow_context(tmp_path / "ctx", base_image, seconds=3)
    received_before = [received_builds(each) for each in farm_workers]
    since = settle()
    # half through the caller's API, a quarter sent to each host's own queue: both hosts surely get requests
    on_hosts = [team_host_queue(each.host_id) for each in farm_workers] * 4
    with ThreadPoolExecutor(16) as pool:
        by_client = [pool.submit(client.build, repo, path=str(context), tag="same", timeout_s=TIMEOUT_S) for _ in range(8)]
        by_queue = [
            pool.submit(lambda queue: client.build_signature(repo, path=str(context), tag="same").set(queue=queue).apply_async().get(timeout=TIMEOUT_S), queue)
            for queue in on_hosts
        ]
        results = [each.result() for each in [*by_client, *by_queue]]
    until = settle()

    base_id = image_id_on_any(engines, base_image)
    assert container_creates(engines, since, until, from_image=base_id) == 1, "one RUN step ran on the two engines"
    assert len({result["image_id"] for result in results}) == 1
    assert sorted(result["cache"] for result in results).count("built") == 1
    holder = results[0]["host"]
    assert {result["host"] for result in results} == {holder}
    received = [received_builds(each) - before for each, before in zip(farm_workers, received_before)]
    assert all(count > 0 for count in received), f"requests reached both hosts: {received}"

    pushed = client.push(repo, tag="same", credentials=registry.credentials, timeout_s=TIMEOUT_S)
    assert pushed["host"] == holder, "the push runs where the image is"
    assert registry.manifest_digest(repo.removeprefix(registry.url + "/"), "same") == pushed["digest"]


def test_one_byte_changes_rebuild_and_ignored_files_do_not(
    tmp_path: Path, repo: str, base_image: str, engines: list[docker.DockerClient], farm_workers: list[WorkerProcess],
) -> None:
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "data.txt").write_text(f"{uuid.uuid4()}\n")
    (context / "ignored.txt").write_text("a\n")
    (context / ".dockerignore").write_text("ignored.txt\n")
    (context / "Dockerfile").write_text(
        f"FROM {base_image}\nARG FLAVOUR=plain\nCOPY data.txt /data.txt\nRUN cat /data.txt > /out && echo $FLAVOUR a >> /out\n"
    )

    def build(**extra: Any) -> tuple[dict[str, Any], int]:
        since = settle()
        result = client.build(repo, path=str(context), tag="t", timeout_s=TIMEOUT_S, **extra)
        return result, container_creates(engines, since, settle())

    first, creates = build()
    assert first["cache"] == "built" and creates >= 1

    (context / "ignored.txt").write_text("b\n")
    again, creates = build()
    assert again["cache"] == "hit" and creates == 0 and again["image_id"] == first["image_id"]

    (context / "data.txt").write_text((context / "data.txt").read_text() + "!")
    changed_context, creates = build()
    assert changed_context["cache"] == "built" and creates >= 1

    dockerfile = (context / "Dockerfile").read_text()
    (context / "Dockerfile").write_text(dockerfile.replace("echo $FLAVOUR a", "echo $FLAVOUR b"))
    changed_dockerfile, creates = build()
    assert changed_dockerfile["cache"] == "built" and creates >= 1

    changed_arg, creates = build(buildargs={"FLAVOUR": "spicy"})
    assert changed_arg["cache"] == "built" and creates >= 1
    assert len({r["image_id"] for r in (first, changed_context, changed_dockerfile, changed_arg)}) == 4


def test_a_push_sent_on_its_own_runs_on_the_host_holding_the_image(
    project: Path, repo: str, registry: Registry, engines: list[docker.DockerClient], farm_workers: list[WorkerProcess],
) -> None:
    second = farm_workers[1]
    built = client.build_signature(repo, path=str(project), tag="on-second").set(
        queue=team_host_queue(second.host_id)
    ).apply_async().get(timeout=TIMEOUT_S)
    assert built["host"] == second.host_id
    with pytest.raises(docker.errors.ImageNotFound):
        engines[0].images.get(f"{repo}:on-second")

    pushed = client.push_signature(repo, tag="on-second", credentials=registry.credentials).apply_async().get(timeout=TIMEOUT_S)
    assert pushed["host"] == second.host_id
    assert registry.manifest_digest(repo.removeprefix(registry.url + "/"), "on-second") == pushed["digest"]
    again = client.push(repo, tag="on-second", credentials=registry.credentials)
    assert again["cache"] == "hit" and again["digest"] == pushed["digest"]


def test_same_content_other_tags_are_applied_without_a_rebuild(
    project: Path, repo: str, engines: list[docker.DockerClient], farm_workers: list[WorkerProcess],
) -> None:
    first = client.build(repo, path=str(project), tag="one", timeout_s=TIMEOUT_S)
    since = settle()
    second = client.build(repo, path=str(project), tag="two", additional_tags=["three"], timeout_s=TIMEOUT_S)
    assert container_creates(engines, since, settle()) == 0
    assert second["image_id"] == first["image_id"] and second["host"] == first["host"]
    assert second["cache"] == "hit"
    tags = set(engine_of(first["host"], farm_workers, engines).images.get(first["image_id"]).tags)
    assert {f"{repo}:one", f"{repo}:two", f"{repo}:three"} <= tags


def test_an_image_deleted_behind_dockyards_back_is_rebuilt(
    project: Path, repo: str, settings: Settings, redis_client: redis.Redis,
    engines: list[docker.DockerClient], farm_workers: list[WorkerProcess],
) -> None:
    first = client.build(repo, path=str(project), tag="v1", timeout_s=TIMEOUT_S)
    engine = engine_of(first["host"], farm_workers, engines)
    spec, packed = prepare_build({"image_name": repo, "path": str(project), "tag": "v1"}, settings)
    packed.close()
    flight = build_cache(redis_client, settings)
    cache_key = client.caller_cache_key(spec, settings)
    assert cache_key is not None and flight.peek(cache_key) is not None

    engine.images.remove(first["image_id"], force=True)
    deadline = time.monotonic() + 10
    while flight.peek(cache_key) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert flight.peek(cache_key) is None, "the host noticed the deletion and dropped the entry"

    second = client.build(repo, path=str(project), tag="v1", timeout_s=TIMEOUT_S)
    assert second["cache"] == "built"
    engine_of(second["host"], farm_workers, engines).images.get(second["image_id"])
