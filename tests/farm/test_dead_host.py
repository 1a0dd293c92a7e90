"""A dead host costs seconds: with the settings users get, its work runs again on a live host.

Three hosts of their own (defaults for the lease, heartbeat, visibility
timeout, time limit and redelivery cap; only the queue is theirs, so the
session's shortened workers take none of it). The host running a build is
killed with SIGKILL (its whole process group, as a machine that dies).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import docker
import pytest
import redis

from dockyard.config import defaults
from dockyard.tasks.celery_app import caller_app
from dockyard.config.settings import Settings, get_settings, host_queue
from dockyard.tasks import client
from tests.farm.farm_helpers import team_host_queue, team_shared_queue
from tests.farm.conftest import Registry, WorkerProcess, farm_docker_hosts, operator_app
from tests.farm.farm_helpers import container_creates, image_id_on_any, settle, slow_context
from dockyard.workers import launcher

ANSWERED_WITHIN_S = 60  # the bound, measured from the kill
BUILD_S = 8
DEFAULTS = {  # what users get: every recovery timing at its default
    "DOCKYARD_TASK_TIME_LIMIT_S": str(defaults.TASK_TIME_LIMIT_S),
    "DOCKYARD_VISIBILITY_TIMEOUT_S": str(defaults.VISIBILITY_TIMEOUT_S),
    "DOCKYARD_LEASE_S": str(defaults.LEASE_S),
    "DOCKYARD_HEARTBEAT_INTERVAL_S": str(defaults.HEARTBEAT_INTERVAL_S),
    "DOCKYARD_HEARTBEAT_TTL_S": str(defaults.HEARTBEAT_TTL_S),
    "DOCKYARD_MAX_REDELIVERIES": str(defaults.MAX_REDELIVERIES),
    "DOCKYARD_TRANSIENT_RETRIES": str(defaults.TRANSIENT_RETRIES),
}


@pytest.fixture
def three_hosts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[WorkerProcess]]:
    """Three workers with default timings on a build queue of their own; this test's callers send there."""
    queue = f"dockyard-test.deadhost-{uuid.uuid4().hex[:6]}"
    for name, value in {**DEFAULTS, "DOCKYARD_BUILD_QUEUE": queue}.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    caller_app.cache_clear()
    engines = farm_docker_hosts()
    run = uuid.uuid4().hex[:6]
    workers = [
        WorkerProcess(f"test-dead-{n}-{run}", engines[n % 2], tmp_path / f"host-{n}.log", {**DEFAULTS, "DOCKYARD_BUILD_QUEUE": queue})
        for n in range(3)
    ]
    try:
        with launcher.running(workers, operator_app()):
            yield workers
    finally:
        get_settings.cache_clear()
        caller_app.cache_clear()


def the_builder(workers: list[WorkerProcess], timeout_s: float = 30) -> WorkerProcess:
    """The worker with a build task running."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        active = operator_app().control.inspect(timeout=1).active() or {}
        for nodename, tasks in active.items():
            if any(task["name"] == "dockyard.build_docker_image" for task in tasks):
                return next(each for each in workers if nodename.startswith(each.host_id + "@"))
        time.sleep(0.2)
    raise AssertionError("no build started")


def answered_at(future: Future[Any]) -> Callable[[], float]:
    """When ``future`` was answered (monotonic), recorded by a callback."""
    stamp: list[float] = []
    future.add_done_callback(lambda _: stamp.append(time.monotonic()))
    return lambda: stamp[0]


def unacked_for(redis_client: redis.Redis, queues: set[str]) -> int:
    """Messages routed to ``queues`` that kombu still holds as delivered and not acknowledged
    (what the visibility timeout would deliver again)."""
    routed = [json.loads(raw)[2] for raw in redis_client.hvals("unacked")]
    return sum(1 for routing_key in routed if routing_key in queues)


def test_a_host_killed_mid_build_costs_seconds_with_the_default_settings(
    tmp_path: Path, repo: str, base_image: str, registry: Registry, settings: Settings, redis_client: redis.Redis,
    engines: list[docker.DockerClient], three_hosts: list[WorkerProcess],
) -> None:
    context = slow_context(tmp_path / "ctx", base_image, seconds=BUILD_S)
    base_id = image_id_on_any(engines, base_image)
    since = settle()
    with ThreadPoolExecutor(3) as pool:
        direct = pool.submit(client.build, repo, path=str(context), tag="x", timeout_s=300)
        builder = the_builder(three_hosts)
        chained = pool.submit(
            lambda: (client.build_signature(repo, path=str(context), tag="x")
                     | client.push_signature(credentials=registry.credentials)).apply_async().get(timeout=300)
        )
        joined = pool.submit(client.build, repo, path=str(context), tag="x", timeout_s=300)
        time.sleep(1)  # the chain's build waits on the lease; the joined caller waits on it too
        answered = {name: answered_at(future) for name, future in (("direct", direct), ("chain", chained), ("joined", joined))}
        builder.kill()
        killed_at = time.monotonic()
        results = {"direct": direct.result(), "chain": chained.result(), "joined": joined.result()}
    waits = {name: round(when() - killed_at, 1) for name, when in answered.items()}
    print(f"answered after the kill (s): {waits}")
    assert all(wait <= ANSWERED_WITHIN_S for wait in waits.values()), waits
    survivors = {each.host_id for each in three_hosts} - {builder.host_id}
    assert results["direct"]["host"] in survivors and results["direct"]["image_id"] == results["joined"]["image_id"]
    assert results["chain"]["digest"] == registry.manifest_digest(repo.removeprefix(registry.url + "/"), "x")
    assert container_creates(engines, since, settle(), from_image=base_id) <= 2, "built once more at most"

    queues = {team_shared_queue(), *(team_host_queue(each.host_id) for each in three_hosts)}
    deadline = time.monotonic() + 15  # the survivors' own tasks end (and are acknowledged) just after their answers
    while unacked_for(redis_client, queues) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert unacked_for(redis_client, queues) == 0, (
        f"left for the visibility timeout: {[json.loads(raw)[0]['headers'] for raw in redis_client.hvals('unacked')]}"
    )
    # the killed host comes back: nothing of what it held is delivered again
    quiet_from = settle()
    builder.start()
    builder.wait_ready(operator_app())
    time.sleep(3)
    assert container_creates(engines, quiet_from, settle(), from_image=base_id) == 0, "the original message built nothing"
    assert "Task dockyard.build_docker_image" not in builder.log().split(" ready.")[-1], "nothing was redelivered to it"


def test_a_lone_caller_of_a_killed_host_is_answered_by_the_restored_message(
    tmp_path: Path, repo: str, base_image: str, engines: list[docker.DockerClient], three_hosts: list[WorkerProcess],
) -> None:
    """No other caller builds the key: only the killed host's message, restored at once, can answer."""
    context = slow_context(tmp_path / "ctx", base_image, seconds=BUILD_S)
    lines: list[str] = []
    with ThreadPoolExecutor(1) as pool:
        direct = pool.submit(client.build, repo, path=str(context), tag="alone", timeout_s=300, on_output=lines.append)
        builder = the_builder(three_hosts)
        answered = answered_at(direct)
        builder.kill()
        killed_at = time.monotonic()
        result = direct.result()
    print(f"answered {answered() - killed_at:.1f} s after the kill")
    assert answered() - killed_at <= ANSWERED_WITHIN_S
    assert result["host"] != builder.host_id and result["cache"] in ("built", "joined")
    told = [line for line in lines if "stopped answering" in line]
    assert told == [f"dockyard: host {builder.host_id} running this build stopped answering; a live host takes its work over\n"]
    engines[[each.host_id for each in three_hosts].index(result["host"]) % 2].images.get(result["image_id"])


def test_a_chain_whose_build_host_dies_before_its_push_rebuilds_and_pushes(
    project: Path, repo: str, registry: Registry, engines: list[docker.DockerClient], three_hosts: list[WorkerProcess],
) -> None:
    """The build ends on its host, which dies (its engine's copy with it) before the push runs;
    the push, routed to the dead host's queue, is rerouted and rebuilds by the same key first."""
    doomed = three_hosts[0]
    built = client.build_signature(repo, path=str(project), tag="orphan").set(queue=team_host_queue(doomed.host_id)).apply_async().get(timeout=120)
    assert built["host"] == doomed.host_id
    doomed.kill()
    engines[0].images.remove(built["image_id"], force=True)  # the host's engine died with it
    push = client.push_signature(credentials=registry.credentials).clone(args=(built,))
    assert push.options.get("queue") in (None, host_queue(doomed.host_id))
    pushed = push.apply_async().get(timeout=ANSWERED_WITHIN_S)
    assert pushed["host"] != doomed.host_id
    served = registry.manifest_digest(repo.removeprefix(registry.url + "/"), "orphan")
    assert served == pushed["digest"]
    holder = engines[[each.host_id for each in three_hosts].index(pushed["host"]) % 2]
    rebuilt = holder.images.get(f"{repo}:orphan")
    assert rebuilt.id != built["image_id"] and f"{repo}@{served}" in rebuilt.attrs["RepoDigests"], "the rebuilt image was pushed"
