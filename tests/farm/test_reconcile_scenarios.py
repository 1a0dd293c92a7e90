"""Reconciliation at worker start, on the real farm: an image removed while its worker was down.

The issue's must-show: an image is removed with the worker stopped, and the
worker is started again. The next request rebuilds; it is not a hit, and the
push does not fail.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import docker
import redis
from celery import Celery

from dockyard.tasks.celery_app import create_celery
from dockyard.config.settings import Settings
from dockyard.tasks import client
from dockyard.tasks.farm import hosts
from tests.farm.conftest import Registry, WorkerProcess, farm_docker_hosts, operator_app

TIMEOUT_S = 120


def own_queue(host_id: str) -> str:
    """A build queue for this test's worker only (no other test worker takes its builds)."""
    return f"dockyard-test.{host_id}"


def caller_on(queue: str, settings: Settings) -> Celery:
    """The test process's caller app, sending builds to ``queue``."""
    return create_celery(settings.model_copy(update={"build_queue": queue}))


def started(
    host_id: str, docker_host: str, log_path: Path, connection: redis.Redis, settings: Settings
) -> WorkerProcess:
    """A worker for ``host_id`` on its own build queue that answers a ping and heartbeats (so the
    caller's fast path may answer for it)."""
    worker = WorkerProcess(host_id, docker_host, log_path, {"DOCKYARD_BUILD_QUEUE": own_queue(host_id)}).start()
    try:
        worker.wait_ready(operator_app(), ready=lambda host: hosts.is_alive(connection, settings, host))
    except BaseException:
        worker.stop()  # a worker that never came up is not left running (and heartbeating) after the test
        raise
    return worker


def test_an_image_removed_while_its_worker_was_down_is_rebuilt_not_a_hit_and_pushes(
    tmp_path: Path, project: Path, repo: str, registry: Registry, redis_client: redis.Redis, settings: Settings,
    placement_off: None,
) -> None:
    docker_host = farm_docker_hosts()[-1]
    host_id = f"test-reconcile-{uuid.uuid4().hex[:6]}"
    engine = docker.DockerClient(base_url=docker_host)
    app = caller_on(own_queue(host_id), settings)
    worker = started(host_id, docker_host, tmp_path / "first.log", redis_client, settings)
    try:
        first = client.build(repo, path=str(project), tag="v1", app=app, timeout_s=TIMEOUT_S)
        assert (first["host"], first["cache"]) == (host_id, "built")
        worker.stop()
        assert not hosts.is_alive(redis_client, settings, host_id)

        engine.images.remove(first["image_id"], force=True)  # `docker rmi -f`: every tag, no worker to see it
        assert engine.images.list(name=repo) == []
        assert hosts.recorded_images(redis_client, settings, host_id) == [first["image_id"]], "the stale record"

        worker = started(host_id, docker_host, tmp_path / "second.log", redis_client, settings)
        again = client.build(repo, path=str(project), tag="v1", app=app, timeout_s=TIMEOUT_S)
        assert again["cache"] != "hit", "an image removed while its worker was down was answered as a hit"
        assert (again["host"], again["cache"]) == (host_id, "built")
        assert engine.images.get(again["image_id"]).id == again["image_id"]

        pushed = client.push(repo, tag="v1", credentials=registry.credentials, app=app, timeout_s=TIMEOUT_S)
        assert pushed["digest"]
        assert registry.manifest_digest(repo.removeprefix(registry.url + "/"), "v1") == pushed["digest"]

        log = worker.log()
        reconciled = f"reconciled {host_id}: 1 of 1 recorded images gone from its engine"
        assert reconciled in log, worker.log_tail()
        assert log.index(reconciled) < log.index(" ready."), "reconciled before the worker takes work"
    finally:
        worker.stop()
        engine.close()

