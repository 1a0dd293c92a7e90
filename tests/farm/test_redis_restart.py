"""Redis restarted while tasks are queued and running: workers reconnect, nothing queued is lost.

This farm has its own Redis with the append-only file on (as production
Redis must be, see the README), its own two workers and its own clients.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.farm.conftest import WorkerProcess, farm_docker_hosts
from dockyard.workers import launcher

PORT = 6393  # its own Redis: 6390 is the farm's, 6391 the context store, 6395-6396 Sentinel's
ENQUEUE = """
import json, sys
from dockyard.tasks.client import build_signature
ids = [build_signature(sys.argv[1], path=path, tag=f"t{n}").apply_async().id for n, path in enumerate(sys.argv[2:])]
print(json.dumps(ids))
"""
COLLECT = """
import json, sys
from celery.result import AsyncResult
from dockyard.workers.app import app
print(json.dumps([AsyncResult(i, app=app).get(timeout=float(sys.argv[1]))["image_id"] for i in json.loads(sys.argv[2])]))
"""


def start_redis(directory: Path) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        ["redis-server", "--port", str(PORT), "--bind", "127.0.0.1", "--dir", str(directory),
         "--appendonly", "yes", "--appendfsync", "always", "--save", ""],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    connection = redis.Redis(port=PORT)
    for _ in range(100):
        if process.poll() is not None:
            raise AssertionError(f"redis-server could not start on port {PORT} (is the port taken?)")
        try:
            connection.ping()
            return process
        except redis.ConnectionError:
            time.sleep(0.05)
    raise AssertionError("redis did not start")


@pytest.fixture
def persistent_farm(tmp_path: Path) -> Iterator[dict[str, object]]:
    from dockyard.workers.app import create_app
    from dockyard.config.settings import Settings

    data = tmp_path / "redis"
    data.mkdir()
    server = start_redis(data)
    env = {"DOCKYARD_REDIS_URL": f"redis://127.0.0.1:{PORT}/0"}
    workers = [
        WorkerProcess(f"test-aof-{n}-{uuid.uuid4().hex[:4]}", url, tmp_path / f"aof-{n}.log", env)
        for n, url in enumerate(farm_docker_hosts()[:2], start=1)
    ]
    app = create_app(Settings(redis_url=env["DOCKYARD_REDIS_URL"], key_prefix="dockyard-test:"))
    state: dict[str, object] = {"server": server, "data": data, "env": env, "workers": workers}
    try:
        with launcher.running(workers, app):
            yield state
    finally:
        current = state["server"]
        assert isinstance(current, subprocess.Popen)
        current.terminate()
        current.wait()


def run(code: str, env: dict[str, str], *args: str) -> str:
    completed = subprocess.run(
        [sys.executable, "-c", code, *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=240
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed.stdout.strip().splitlines()[-1]


def test_tasks_survive_a_redis_restart(tmp_path: Path, repo: str, base_image: str, persistent_farm: dict[str, object]) -> None:
    env = persistent_farm["env"]
    assert isinstance(env, dict)
    contexts = []
    for n in range(6):
        context = tmp_path / f"ctx{n}"
        context.mkdir()
        (context / "Dockerfile").write_text(f"FROM {base_image}\nRUN sleep 2 && echo {uuid.uuid4()}\n")
        contexts.append(str(context))
    ids = json.loads(run(ENQUEUE, env, repo, *contexts))
    time.sleep(1.0)  # four are running, two are queued

    connection = redis.Redis(port=PORT)
    connection.shutdown(nosave=False)  # the append-only file keeps the queue and the unacked messages
    server = persistent_farm["server"]
    assert isinstance(server, subprocess.Popen)
    server.wait(timeout=10)
    data = persistent_farm["data"]
    assert isinstance(data, Path)
    time.sleep(1.0)
    persistent_farm["server"] = start_redis(data)

    image_ids = json.loads(run(COLLECT, env, "180", json.dumps(ids)))
    assert len(image_ids) == 6 and all(image_id.startswith("sha256:") for image_id in image_ids)
    assert len(set(image_ids)) == 6
