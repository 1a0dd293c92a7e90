"""The fast lane on the real farm: cheap work never waits behind builds; what is not cheap goes to the
build lanes; a dead host's fast queue is rerouted.

Two hosts of two build slots each (the session's workers), each with its fast lane beside it.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import redis
from celery.result import AsyncResult

from dockyard.tasks.celery_app import caller_app
from dockyard.config.settings import Settings
from dockyard.tasks.farm import recovery
from dockyard.tasks.client import build_and_push, build_signature
from dockyard.tasks.keyspace import key
from dockyard.tasks.task_names import PING_TASK
from tests.farm.farm_helpers import team_fast_queue
from tests.farm.conftest import Registry, WorkerProcess

TIMEOUT_S = 120
LONG_BUILD_S = 15  # below the session's 25 s time limit
SLOTS = 4  # two hosts, two build slots each


def write_project(root: Path, base_image: str, *, sleep_s: int = 0) -> Path:
    root.mkdir(parents=True)
    run = f"RUN sleep {sleep_s}\n" if sleep_s else ""
    (root / "Dockerfile").write_text(f"FROM {base_image}\n{run}COPY app.txt /app.txt\n")
    (root / "app.txt").write_text(f"{uuid.uuid4()}\n")
    return root


def running_builds(connection: redis.Redis, settings: Settings) -> int:
    """Builds holding a lease now (each runs in a build slot)."""
    return sum(1 for _ in connection.scan_iter(match=key(settings, "lease", "*"), count=1000))


def test_a_chain_on_a_cached_key_completes_while_every_build_slot_is_busy(
    tmp_path: Path, repo: str, base_image: str, registry: Registry, settings: Settings,
    redis_client: redis.Redis, farm_workers: list[WorkerProcess],
) -> None:
    cached = write_project(tmp_path / "cached", base_image)
    first = build_and_push(repo, credentials=registry.credentials, path=str(cached), tag="cached").apply_async()
    first.get(timeout=TIMEOUT_S)
    assert first.parent.get(timeout=5)["cache"] == "built"

    long_builds = [
        build_signature(repo, path=str(write_project(tmp_path / f"long-{n}", base_image, sleep_s=LONG_BUILD_S)),
                        tag=f"long-{n}").apply_async()
        for n in range(SLOTS + 2)
    ]
    deadline = time.monotonic() + 60
    while running_builds(redis_client, settings) < SLOTS and time.monotonic() < deadline:
        time.sleep(0.1)
    assert running_builds(redis_client, settings) == SLOTS, "every build slot of the farm is busy"

    again = build_and_push(repo, credentials=registry.credentials, path=str(cached), tag="cached").apply_async()
    pushed = again.get(timeout=TIMEOUT_S)
    still_running = [not each.ready() for each in long_builds]
    built = again.parent.get(timeout=5)
    assert (built["cache"], pushed["cache"]) == ("hit", "hit")
    assert all(still_running), "the chain on a cached key was answered while every long build still ran"
    for each in long_builds:
        assert each.get(timeout=TIMEOUT_S)["cache"] == "built"


def test_fast_work_that_is_not_cheap_is_built_in_a_build_lane(
    tmp_path: Path, repo: str, base_image: str, farm_workers: list[WorkerProcess]
) -> None:
    """A build of a key nobody holds, sent straight to a fast queue: the fast lane hands it over."""
    project = write_project(tmp_path / "miss", base_image)
    holder = farm_workers[0].host_id
    result = build_signature(repo, path=str(project), tag="miss").apply_async(queue=team_fast_queue(holder))
    built = result.get(timeout=TIMEOUT_S)
    assert built["cache"] == "built"
    assert "duration_s" in built


def test_a_dead_hosts_fast_queue_is_rerouted(
    settings: Settings, redis_client: redis.Redis, farm_workers: list[WorkerProcess]
) -> None:
    """A host heartbeated (so it is known), work was routed to its fast queue, and it died before taking it:
    a live host moves that work to the shared queue, where a build worker answers it."""
    dead = f"test-dead-{uuid.uuid4().hex[:6]}"
    recovery.known(redis_client, settings.model_copy(update={"host_id": dead}))
    result: AsyncResult = caller_app().signature(PING_TASK).apply_async(queue=team_fast_queue(dead))
    assert result.get(timeout=30) == "pong"
    assert redis_client.llen(team_fast_queue(dead)) == 0
