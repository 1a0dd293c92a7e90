"""The build network by policy, and the start-up probe that tells whether build steps reach the farm.

A request naming a network outside the allowed set (``DOCKYARD_BUILD_NETWORKS``) is refused on the worker,
naming the setting, on both backends. The session's default workers (engines without a bridge: network
``none``) probe their build network at start and report that it does not reach the farm; a worker allowed
the host network (``DOCKYARD_BUILD_NETWORKS=host``) reports that it does, starts only with
``DOCKYARD_ACCEPT_BUILD_NETWORK_REACHING_FARM=true`` and refuses to start without it; ``dockyard doctor``
prints both.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from dockyard.config.settings import Settings
from dockyard.tasks.errors import InvalidInput
from dockyard.tasks.farm import hosts
from tests.farm.conftest import WORKER_REDIS_URL, WorkerProcess, farm_docker_hosts
from tests.farm.test_trust import prepared_spec, send_spec, worker_app

TIMEOUT_S = 120
WAIT_S = 60.0


def wait_until(condition: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if found := condition():
            return found
        time.sleep(0.2)
    pytest.fail(f"timed out waiting until {what}")


def doctor() -> str:
    """``dockyard doctor``, as an operator (the worker user's Redis URL)."""
    done = subprocess.run(
        [sys.executable, "-m", "dockyard.workers.cli", "doctor"], capture_output=True, text=True, timeout=TIMEOUT_S,
        env={**os.environ, "DOCKYARD_REDIS_URL": WORKER_REDIS_URL},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def probe_record(connection: redis.Redis, settings: Settings, host_id: str) -> dict[str, Any]:
    def found() -> Any:
        raw = connection.get(hosts.host_key(settings, host_id))
        return json.loads(raw).get("build_network") if raw else None

    record: dict[str, Any] = wait_until(found, f"{host_id} heartbeats with its probe's result")
    return record


@pytest.mark.parametrize(
    ("backend", "option", "value"),
    [("docker-py", "network_mode", "bridge"), ("buildx", "network", "default"), ("docker-py", "network_mode", "dockyard_default"),
     ("buildx", "network", "dockyard_default")],
)
def test_a_network_outside_the_allowed_set_is_refused_on_the_worker_naming_the_setting(
    backend: str, option: str, value: str, repo: str, project: Path, settings: Settings, farm_workers: list[WorkerProcess],
) -> None:
    """The caller lets ``bridge`` through (it cannot know the engine) and a spec made where the compose
    network is allowed gets past it too: the workers (engines without a bridge, the setting unset) refuse."""
    spec = prepared_spec(
        settings, {"image_name": repo, "path": str(project), "tag": "net", "build_backend": backend, option: value},
        allow={"build_networks": [value]} if value == "dockyard_default" else None,
    )
    with pytest.raises(InvalidInput, match=rf"(?s)Build option {option}='{value}'.*DOCKYARD_BUILD_NETWORKS.*allowed here: none"):
        send_spec(spec)


@pytest.fixture
def host_network_worker(tmp_path: Path, settings: Settings) -> Iterator[WorkerProcess]:
    """A worker allowed the host network (its default), accepting that its steps reach the farm; own build queue."""
    worker = WorkerProcess(
        f"test-hostnet-{uuid.uuid4().hex[:6]}", farm_docker_hosts()[0], tmp_path / "hostnet.log",
        extra_env={"DOCKYARD_BUILD_NETWORKS": "host", "DOCKYARD_ACCEPT_BUILD_NETWORK_REACHING_FARM": "true",
                   "DOCKYARD_BUILD_QUEUE": f"dockyard-test.hostnet-{uuid.uuid4().hex[:6]}"},
    ).start()
    try:
        worker.wait_ready(worker_app())
        yield worker
    finally:
        worker.stop()
        print(f"--- {worker.host_id}\n{worker.log_tail()}")


def test_the_probe_says_the_default_network_does_not_reach_the_farm_and_the_host_network_does(
    host_network_worker: WorkerProcess, farm_workers: list[WorkerProcess], redis_client: redis.Redis, settings: Settings,
) -> None:
    default = farm_workers[0]
    closed = probe_record(redis_client, settings, default.host_id)
    assert closed["network"] == "none" and closed["reaches_farm"] is False and closed["error"] is None, closed
    farm_redis = redis_client.connection_pool.connection_kwargs
    assert f"{farm_redis['host']}:{farm_redis['port']}" in closed["probed"], "it probed the farm's Redis"
    assert any(address.endswith(str(urlport(settings.context_store_url))) for address in closed["probed"])

    open_ = probe_record(redis_client, settings, host_network_worker.host_id)
    assert open_["network"] == "host" and open_["reaches_farm"] is True and open_["accepted"] is True, open_
    assert f"{farm_redis['host']}:{farm_redis['port']}" in open_["reached"], open_
    assert "BUILD STEPS CAN REACH THE FARM" in host_network_worker.log()

    report = doctor()
    assert f"{default.host_id}: build network none reaches the farm: no (probed " in report, report
    assert f"{host_network_worker.host_id}: build network host reaches the farm: yes (" in report, report


def urlport(url: str) -> int:
    from urllib.parse import urlsplit

    return urlsplit(url).port or 6379


def test_a_worker_whose_steps_reach_the_farm_refuses_to_start_unless_accepted(tmp_path: Path) -> None:
    worker = WorkerProcess(
        f"test-hostnet-refused-{uuid.uuid4().hex[:6]}", farm_docker_hosts()[0], tmp_path / "refused.log",
        extra_env={"DOCKYARD_BUILD_NETWORKS": "host", "DOCKYARD_BUILD_QUEUE": f"dockyard-test.refused-{uuid.uuid4().hex[:6]}"},
    ).start()
    try:
        wait_until(lambda: not worker.running(), "the worker exits")
        assert worker.process is not None and worker.process.returncode != 0, worker.log_tail()
        log = worker.log()
        assert "BUILD STEPS CAN REACH THE FARM" in log and "refusing to start" in log, worker.log_tail()
        assert "DOCKYARD_ACCEPT_BUILD_NETWORK_REACHING_FARM=true" in log
    finally:
        worker.stop()
