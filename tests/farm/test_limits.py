"""Resource limits of build steps on the real farm, both backends (see docs/operations.md#limits).

One worker of its own (its own host id and build queue, on the first engine)
with small limits from its environment: 64 MiB of memory, half a CPU, 32
processes. A step that allocates ~300 MiB fails its build with an error
naming the memory limit while a concurrent build on the same worker
succeeds; a step that forks 64 sleeps fails naming the pids limit; a request
for more than the farm allows is refused, one for less is built under it.
The limits a step sees in ``/sys/fs/cgroup`` are written into its image and
printed (``pytest -s``).
"""

from __future__ import annotations

import concurrent.futures
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import redis
from celery import Celery

from dockyard.config.settings import Settings
from dockyard.tasks import client
from dockyard.tasks.celery_app import create_celery
from dockyard.tasks.farm import hosts
from tests.farm.conftest import WorkerProcess, farm_docker_hosts, operator_app

TIMEOUT_S = 120
MEMORY_BYTES = 64 * 1024**2
PIDS = 32
CPUS = 0.5
BACKENDS = ["docker-py", "buildx"]
# what a step sees of its limits: its own cgroups, the memory limit of its hierarchy, and its cgroup path
SHOW_LIMITS = (
    "{ echo memory.limit_in_bytes=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes);"
    " echo memory.memsw.limit_in_bytes=$(cat /sys/fs/cgroup/memory/memory.memsw.limit_in_bytes);"
    " grep hierarchical_memory_limit /sys/fs/cgroup/memory/memory.stat | tr ' ' '=';"
    " echo pids.max=$(cat /sys/fs/cgroup/pids/pids.max);"
    " echo cpu.cfs_quota_us=$(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us);"
    " echo cpu.cfs_period_us=$(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us);"
    " echo pids.cgroup=$(grep ':pids:' /proc/self/cgroup | cut -d: -f3); } > /limits.txt && cat /limits.txt"
)


@pytest.fixture(scope="module")
def limited_worker(tmp_path_factory: pytest.TempPathFactory, redis_client: redis.Redis, settings: Settings) -> Iterator[Celery]:
    """A worker with small limits, on a build queue of its own; the app that sends to it."""
    host_id = f"test-limits-{uuid.uuid4().hex[:6]}"
    queue = f"dockyard-test.{host_id}"
    worker = WorkerProcess(
        host_id, farm_docker_hosts()[0], tmp_path_factory.mktemp("limits") / "worker.log",
        {"DOCKYARD_BUILD_QUEUE": queue, "DOCKYARD_BUILD_MEMORY_BYTES": str(MEMORY_BYTES),
         "DOCKYARD_BUILD_PIDS": str(PIDS), "DOCKYARD_BUILD_CPUS": str(CPUS)},
    ).start()
    try:
        worker.wait_ready(operator_app(), ready=lambda host: hosts.is_alive(redis_client, settings, host))
        app = create_celery(settings.model_copy(update={"build_queue": queue}))
        app.conf.dockyard_test_host = host_id  # which host the tests check is still alive
        yield app
    finally:
        print(worker.log_tail())
        worker.stop()


def context(root: Path, base_image: str, run: str) -> Path:
    root.mkdir(parents=True)
    (root / "Dockerfile").write_text(f"FROM {base_image}\nRUN echo {uuid.uuid4().hex} > /fresh\nRUN {run}\n")
    return root


def seen_limits(engine: docker.DockerClient, image: str) -> dict[str, str]:
    """The limits the build's step wrote into its image."""
    text = engine.containers.run(image, ["cat", "/limits.txt"], remove=True, network_mode="none").decode()
    return dict(line.split("=", 1) for line in text.split() if "=" in line)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_step_over_its_memory_limit_fails_naming_it_while_a_concurrent_build_succeeds(
    backend: str, limited_worker: Celery, tmp_path: Path, base_image: str, repo: str, engine: docker.DockerClient,
    redis_client: redis.Redis, settings: Settings, placement_off: None,
) -> None:
    hog = context(tmp_path / "hog", base_image, "head -c 300m /dev/zero | tail > /dev/null")  # ~300 MiB in tail's buffer
    calm = context(tmp_path / "calm", base_image, f"{SHOW_LIMITS} && sleep 4")  # still running when the hog fails
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        sent = time.monotonic()
        failing = pool.submit(client.build, repo, path=str(hog), tag="hog", build_backend=backend,
                              app=limited_worker, timeout_s=TIMEOUT_S)
        fine = pool.submit(client.build, repo, path=str(calm), tag="calm", build_backend=backend,
                           app=limited_worker, timeout_s=TIMEOUT_S)
        with pytest.raises(Exception) as failed:
            failing.result()
        hog_failed = time.monotonic() - sent
        built = fine.result()
        calm_done = time.monotonic() - sent
    message = str(failed.value)
    print(f"\n[{backend}] the hog's build failed after {hog_failed:.1f} s: {type(failed.value).__name__}: {message.splitlines()[0]}")
    print(f"[{backend}] the build sent with it to the same worker (2 slots) succeeded after {calm_done:.1f} s")
    assert "exceeded its memory limit of 64 MiB" in message and "DOCKYARD_BUILD_MEMORY_BYTES" in message, message
    assert built["cache"] == "built"
    assert built["host"] == limited_worker.conf.dockyard_test_host
    assert hosts.is_alive(redis_client, settings, built["host"]), "the worker lives on"
    seen = seen_limits(engine, built["image"])
    print(f"[{backend}] limits a step saw: {seen}")
    assert int(seen["memory.limit_in_bytes"]) == MEMORY_BYTES
    assert int(seen["hierarchical_memory_limit"]) == MEMORY_BYTES
    assert int(seen["cpu.cfs_quota_us"]) == int(CPUS * int(seen["cpu.cfs_period_us"]))
    if backend == "buildx":
        assert seen["pids.max"] == str(PIDS)  # written into the step's own cgroup
    else:
        assert seen["pids.cgroup"].startswith("/dockyard/build-")  # under the build's cgroup, whose pids.max is the limit


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_step_forking_past_its_pids_limit_fails_naming_it(
    backend: str, limited_worker: Celery, tmp_path: Path, base_image: str, repo: str, placement_off: None,
) -> None:
    forks = context(tmp_path / "forks", base_image, "for i in $(seq 64); do sleep 5 & done; wait")
    with pytest.raises(Exception) as failed:
        client.build(repo, path=str(forks), tag="forks", build_backend=backend, app=limited_worker, timeout_s=TIMEOUT_S)
    message = str(failed.value)
    print(f"\n[{backend}] the fork build failed: {type(failed.value).__name__}: {message.splitlines()[0]}")
    assert f"pids limit of {PIDS}" in message and "DOCKYARD_BUILD_PIDS" in message, message


def test_a_request_for_more_is_refused_and_one_for_less_is_built_under_it(
    limited_worker: Celery, tmp_path: Path, base_image: str, repo: str, engine: docker.DockerClient, placement_off: None,
) -> None:
    project = context(tmp_path / "asks", base_image, SHOW_LIMITS)
    with pytest.raises(Exception) as refused:
        client.build(repo, path=str(project), tag="more", limits={"memory_bytes": 2 * MEMORY_BYTES},
                     app=limited_worker, timeout_s=TIMEOUT_S)
    print(f"\nasking for more: {type(refused.value).__name__}: {refused.value}")
    assert "more than the farm allows" in str(refused.value) and "DOCKYARD_BUILD_MEMORY_BYTES" in str(refused.value)
    smaller = client.build(repo, path=str(project), tag="less", limits={"memory_bytes": MEMORY_BYTES // 2, "pids": 16},
                           app=limited_worker, timeout_s=TIMEOUT_S)
    seen = seen_limits(engine, smaller["image"])
    print(f"asking for less: limits a step saw: {seen}")
    assert int(seen["memory.limit_in_bytes"]) == MEMORY_BYTES // 2
