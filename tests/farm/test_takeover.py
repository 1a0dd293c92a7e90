"""The worker that owns a running build dies: another host takes over, nobody is left waiting."""

from __future__ import annotations

import time
from pathlib import Path

import docker
import pytest
import redis

from dockyard.config.settings import Settings
from dockyard.tasks import client
from dockyard.tasks.prepare import prepare_build
from tests.farm.conftest import WorkerProcess
from tests.farm.farm_helpers import slow_context

CALLERS = 4


def running_build_engine(engines: list[docker.DockerClient], timeout_s: float = 30) -> int:
    """Index of the engine with a running build container."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for index, engine in enumerate(engines):
            if engine.containers.list(filters={"status": "running"}):
                return index
        time.sleep(0.1)
    raise AssertionError("no build started")


def test_sigkill_of_the_owner_hands_the_build_to_another_host(
    tmp_path: Path, repo: str, base_image: str, settings: Settings, redis_client: redis.Redis,
    engines: list[docker.DockerClient], farm_workers: list[WorkerProcess],
) -> None:
    from dockyard.workers.app import app

    context = slow_context(tmp_path / "ctx", base_image, seconds=6)
    signature = client.build_signature(repo, path=str(context), tag="survivor")
    spec, packed = prepare_build({"image_name": repo, "path": str(context), "tag": "survivor"}, settings)
    packed.close()
    lease_key = f"{settings.key_prefix}lease:{client.caller_cache_key(spec, settings)}"

    pending = [signature.clone().apply_async() for _ in range(CALLERS)]
    owner_index = running_build_engine(engines)
    assert redis_client.exists(lease_key)
    owner, survivor = farm_workers[owner_index], farm_workers[1 - owner_index]
    owner.kill()
    try:
        results = [each.get(timeout=150) for each in pending]
    finally:
        owner.start()
        owner.wait_ready(app)

    assert {result["image_id"] for result in results} != {None}
    assert len({result["image_id"] for result in results}) == 1
    assert {result["host"] for result in results} == {survivor.host_id}
    engines[1 - owner_index].images.get(results[0]["image_id"])
    assert not redis_client.exists(lease_key), "no lease left behind"
    with pytest.raises(docker.errors.ImageNotFound):
        engines[owner_index].images.get(f"{repo}:survivor")
