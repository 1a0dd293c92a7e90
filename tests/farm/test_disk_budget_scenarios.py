"""The disk budget on the real farm: a worker whose budget is three images' worth, ten distinct builds.

The worker has a host id of its own (only its images are candidates) and a
build queue of its own. Each build adds one layer of a fresh MiB to the
farm's base image. After the ten builds the host holds at most three of
them. A push by tag of the first (evicted) key rebuilds it; then every
later request for the ten keys (a build, then a push of the image the
first build answered), most recent first, is a hit (the keys still held)
or a rebuild (the evicted ones), never an error. The
base image and an image the engine made without dockyard stay.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import docker
import redis
from celery import Celery

from dockyard.tasks.celery_app import create_celery
from dockyard.config.settings import Settings
from dockyard.tasks import client
from dockyard.tasks.farm import hosts
from dockyard.tasks.farm import image_use
from tests.farm.conftest import Registry, WorkerProcess, farm_docker_hosts, operator_app

TIMEOUT_S = 120
BLOB_BYTES = 1024 * 1024  # each build's own layer
BUDGET_BYTES = 3 * BLOB_BYTES + 64 * 1024  # three images' worth, not four
BUILDS = 10


def project(root: Path, base_image: str) -> Path:
    """A context whose one layer over the base is a fresh MiB."""
    root.mkdir(parents=True)
    (root / "Dockerfile").write_text(f"FROM {base_image}\nCOPY blob /blob\n")
    (root / "blob").write_bytes(os.urandom(BLOB_BYTES))
    return root


def own_bytes(engine: docker.DockerClient, image_ids: list[str], base_size: int) -> int:
    """What these images hold over the base, by the engine's own image sizes."""
    total = 0
    for image_id in image_ids:
        try:
            total += int(engine.images.get(image_id).attrs["Size"]) - base_size
        except docker.errors.ImageNotFound:
            continue
    return total


def present(engine: docker.DockerClient, image_ids: list[str]) -> list[str]:
    found = []
    for image_id in image_ids:
        try:
            engine.images.get(image_id)
            found.append(image_id)
        except docker.errors.ImageNotFound:
            continue
    return found


def within_budget_soon(engine: docker.DockerClient, image_ids: list[str], base_size: int, timeout_s: float = 15) -> int:
    """The images' bytes over the base once the worker's pass brought them within the budget (or at the deadline)."""
    deadline = time.monotonic() + timeout_s
    while True:
        held = own_bytes(engine, image_ids, base_size)
        if held <= BUDGET_BYTES or time.monotonic() > deadline:
            return held
        time.sleep(0.2)


def test_ten_builds_on_a_host_with_a_budget_of_three_end_within_it_and_every_later_request_answers(
    tmp_path: Path, base_image: str, repo: str, registry: Registry, redis_client: redis.Redis, settings: Settings,
    placement_off: None,
) -> None:
    docker_host = farm_docker_hosts()[-1]
    host_id = f"test-disk-{uuid.uuid4().hex[:6]}"
    queue = f"dockyard-test.{host_id}"
    engine = docker.DockerClient(base_url=docker_host)
    app: Celery = create_celery(settings.model_copy(update={"build_queue": queue}))
    worker = WorkerProcess(
        host_id, docker_host, tmp_path / "worker.log",
        {"DOCKYARD_BUILD_QUEUE": queue, "DOCKYARD_DISK_BUDGET_BYTES": str(BUDGET_BYTES)},
    ).start()
    foreign = f"dockyard-test-foreign/{uuid.uuid4().hex[:8]}:1"
    try:
        worker.wait_ready(operator_app(), ready=lambda host: hosts.is_alive(redis_client, settings, host))
        contexts = [project(tmp_path / f"p{n}", base_image) for n in range(BUILDS)]
        first = [client.build(repo, path=str(contexts[0]), tag="v0", app=app, timeout_s=TIMEOUT_S)]
        base = engine.images.get(base_image)  # the first build pulled it if it was missing
        base_size = int(base.attrs["Size"])
        made, _logs = engine.images.build(  # the same kind of image, built by the engine without dockyard
            path=str(project(tmp_path / "foreign", base_image)), tag=foreign, network_mode="none", rm=True,
        )
        first += [client.build(repo, path=str(ctx), tag=f"v{n}", app=app, timeout_s=TIMEOUT_S)
                  for n, ctx in enumerate(contexts) if n > 0]
        assert [result["cache"] for result in first] == ["built"] * BUILDS
        assert {result["host"] for result in first} == {host_id}
        ids = [result["image_id"] for result in first]

        held = within_budget_soon(engine, ids, base_size)
        kept = present(engine, ids)
        print(f"after {BUILDS} builds: {held} bytes over the base in {len(kept)} images, budget {BUDGET_BYTES}")
        assert held <= BUDGET_BYTES, worker.log_tail()
        assert kept == ids[-3:], "the three most recently used stay"
        assert engine.images.get(base_image).id == base.id, "the base image stays"
        assert engine.images.get(foreign).id == made.id, "an image dockyard did not build stays"
        assert set(image_use.last_uses(redis_client, settings, host_id)) == set(kept)

        by_tag = client.push(repo, tag="v0", credentials=registry.credentials, app=app, timeout_s=TIMEOUT_S)
        assert by_tag["digest"], "a push by tag of an evicted image rebuilds it by the same key"
        rebuilt_v0 = engine.images.get(f"{repo}:v0").id
        assert rebuilt_v0 != ids[0]
        assert registry.manifest_digest(repo.removeprefix(registry.url + "/"), "v0") == by_tag["digest"]

        answers: dict[str, int] = {"hit": 0, "built": 0, "error": 0}
        errors = []
        later_ids = []
        for n, ctx in reversed(list(enumerate(contexts))):  # the most recent first: the three kept are hits
            try:
                again = client.build(repo, path=str(ctx), tag=f"v{n}", app=app, timeout_s=TIMEOUT_S)
                answers["hit" if again["cache"] == "hit" else "built"] += 1
                later_ids.append(again["image_id"])
                assert again["cache"] in ("hit", "built"), again
                assert engine.images.get(f"{repo}:v{n}").id == again["image_id"]
                pushed = client.push(
                    repo, tag=f"v{n}", image_id=ids[n], credentials=registry.credentials, app=app, timeout_s=TIMEOUT_S,
                )  # the image the first build answered, evicted or not
                assert pushed["digest"]
                assert registry.manifest_digest(repo.removeprefix(registry.url + "/"), f"v{n}") == pushed["digest"]
            except Exception as exc:  # noqa: BLE001 - counted, then failed below
                answers["error"] += 1
                errors.append(f"v{n}: {type(exc).__name__}: {exc}")
        print(f"later requests of the {BUILDS} keys: {answers}")
        assert answers["error"] == 0, (errors, worker.log_tail())
        assert answers["hit"] + answers["built"] == BUILDS
        assert answers["hit"] >= 2, "keys still held are hits"
        assert answers["built"] >= BUILDS - 4, "the evicted keys were built again"

        held = within_budget_soon(engine, list(dict.fromkeys([*ids, rebuilt_v0, *later_ids])), base_size)
        print(f"after the later requests: {held} bytes over the base, budget {BUDGET_BYTES}")
        assert held <= BUDGET_BYTES, worker.log_tail()
        assert "disk budget of " + host_id in worker.log()
    finally:
        worker.stop()
        try:
            engine.images.remove(foreign, force=True)
        except docker.errors.DockerException:
            pass
        engine.close()

