"""Faults injected into real processes: dying pool processes, a registry that is down, an engine that is down."""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

import docker
import pytest
import redis

from dockyard.config.settings import Settings
from dockyard.tasks import client
from dockyard.tasks.farm.deliveries import RedeliveryLimit
from dockyard.tasks.errors import EngineUnavailable, RegistryUnavailable
from dockyard.tasks.farm.hosts import live_hosts
from tests.farm.farm_helpers import team_host_queue
from tests.farm.conftest import WorkerProcess, operator_app
from tests.farm.farm_helpers import slow_context

TIMEOUT_S = 180


def test_a_task_that_kills_its_worker_every_time_stops_at_the_redelivery_cap(
    tmp_path: Path, repo: str, base_image: str, settings: Settings, farm_workers: list[WorkerProcess]
) -> None:
    app = operator_app()  # remote control and event receivers are an operator's (the worker user)

    context = slow_context(tmp_path / "ctx", base_image, seconds=30)
    lost_before = sum(worker.log().count("raised error: WorkerLostError") for worker in farm_workers)
    result = client.build_signature(repo, path=str(context), tag="poison").apply_async()
    killed: set[int] = set()
    deadline = time.monotonic() + TIMEOUT_S
    while not result.ready() and time.monotonic() < deadline:
        for tasks in (app.control.inspect(timeout=0.5).active() or {}).values():
            for task in tasks:
                pid, started = task.get("worker_pid"), task.get("time_start")
                # only a delivery that really runs (its build is under way), never the refused one
                if task["id"] == result.id and pid and pid not in killed and started and time.time() - started > 1:
                    os.kill(pid, signal.SIGKILL)  # the pool process running it dies, every time
                    killed.add(pid)
        time.sleep(0.1)
    with pytest.raises(RedeliveryLimit, match=f"its worker died on each of the first {settings.max_redeliveries} "):
        result.get(timeout=5)
    lost = sum(worker.log().count("raised error: WorkerLostError") for worker in farm_workers) - lost_before
    print(f"worker-lost deliveries {lost}, pool processes killed {len(killed)}, cap {settings.max_redeliveries}")
    assert lost == len(killed) == settings.max_redeliveries, "a message whose worker died max_redeliveries times fails"


def test_a_push_to_a_registry_that_is_down_is_retried_then_fails_clearly(
    project: Path, settings: Settings, redis_client: redis.Redis, farm_workers: list[WorkerProcess],
    engines: list[docker.DockerClient],
) -> None:
    name = f"127.0.0.1:5999/faults/{uuid.uuid4().hex[:8]}"
    built = client.build(name, path=str(project), tag="v1", timeout_s=TIMEOUT_S)
    logs_before = {w.host_id: w.log().count("Retry in") for w in farm_workers}
    try:
        with pytest.raises(RegistryUnavailable, match="5999"):
            client.push(name, tag="v1", timeout_s=TIMEOUT_S)
        holder = next(w for w in farm_workers if w.host_id == built["host"])
        assert holder.log().count("Retry in") - logs_before[holder.host_id] == settings.transient_retries
        cached = [redis_client.get(k) or b"" for k in redis_client.scan_iter(f"{settings.key_prefix}push:*")]
        assert not any(name.encode() in value for value in cached), "a failed push is not cached"
    finally:
        for engine in engines:
            for image in engine.images.list(name=name):
                engine.images.remove(image.id, force=True)


@pytest.fixture
def host_without_engine(tmp_path: Path, farm_workers: list[WorkerProcess]) -> object:
    from dockyard.workers.app import app

    worker = WorkerProcess(
        f"test-host-down-{uuid.uuid4().hex[:6]}", "unix:///run/dockyard-no-such-engine.sock", tmp_path / "down.log"
    ).start()
    worker.wait_ready(app)
    yield worker
    worker.stop()


def test_a_host_whose_engine_is_down_stops_advertising_and_its_work_goes_elsewhere(
    tmp_path: Path, repo: str, base_image: str, settings: Settings, redis_client: redis.Redis,
    host_without_engine: WorkerProcess, farm_workers: list[WorkerProcess],
) -> None:
    down = host_without_engine
    deadline = time.monotonic() + 15
    while "no shared builds" not in down.log() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "no shared builds" in down.log()
    assert down.host_id not in {record["host"] for record in live_hosts(redis_client, settings)}

    contexts = []
    for n in range(6):
        context = tmp_path / f"ctx{n}"
        context.mkdir()
        (context / "Dockerfile").write_text(f"FROM {base_image}\nRUN echo {uuid.uuid4()}\n")
        contexts.append(context)
    results = [client.build(repo, path=str(c), tag=f"t{n}", timeout_s=TIMEOUT_S) for n, c in enumerate(contexts)]
    assert {r["host"] for r in results} <= {w.host_id for w in farm_workers}

    pinned = client.build_signature(repo, path=str(contexts[0]), tag="pinned", ignore_cache=True)
    with pytest.raises(EngineUnavailable, match="does not answer"):
        pinned.set(queue=team_host_queue(down.host_id)).apply_async().get(timeout=TIMEOUT_S)
