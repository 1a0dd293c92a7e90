"""Fixtures on the real farm: Redis, the Docker engines, the authenticated registry, workers.

``bash workers/run.sh test`` provisions them first and exports ``farm.env``;
a missing service fails the tests that need it (never a skip).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest
import redis
import requests

from config.settings import Settings, get_settings

TEST_REDIS_DB = "13"
BASE_IMAGE_FALLBACK = "127.0.0.1:5000/base/busybox:1"


def _load_farm_env() -> None:
    farm_dir = Path(os.environ.get("DOCKYARD_FARM_DIR", "/var/lib/dockyard-farm"))
    env_file = farm_dir / "farm.env"
    if env_file.exists():
        for line in env_file.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep and not key.startswith("#"):
                os.environ.setdefault(key.strip(), value.strip())
    redis_url = os.environ.get("DOCKYARD_REDIS_URL", "redis://127.0.0.1:6379/0")
    os.environ["DOCKYARD_REDIS_URL"] = redis_url.rsplit("/", 1)[0] + "/" + TEST_REDIS_DB
    os.environ["DOCKYARD_KEY_PREFIX"] = "dockyard-test:"
    os.environ.setdefault("DOCKYARD_SECRET_KEY", "test-secret-key")
    os.environ["DOCKYARD_TRANSIENT_RETRIES"] = "1"
    os.environ["DOCKYARD_TRANSIENT_BACKOFF_S"] = "0.5"
    os.environ["DOCKYARD_TASK_TIME_LIMIT_S"] = "300"
    os.environ["DOCKYARD_VISIBILITY_TIMEOUT_S"] = "600"
    get_settings.cache_clear()


_load_farm_env()


@dataclass(frozen=True)
class Registry:
    """The farm's authenticated registry, read through its HTTP API."""

    url: str
    username: str
    password: str

    @property
    def credentials(self) -> dict[str, str]:
        return {"username": self.username, "password": self.password, "registry_url": self.url}

    def manifest_digest(self, repository: str, tag: str) -> str | None:
        """The digest the registry serves for ``repository:tag``, or None."""
        response = requests.head(
            f"http://{self.url}/v2/{repository}/manifests/{tag}",
            auth=(self.username, self.password),
            headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
            timeout=10,
        )
        return response.headers.get("Docker-Content-Digest") if response.status_code == 200 else None


@pytest.fixture(scope="session")
def settings() -> Settings:
    return get_settings()


@pytest.fixture(scope="session")
def redis_client(settings: Settings) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(settings.effective_cache_url)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        pytest.fail(f"Redis is not reachable at {settings.effective_cache_url}: {exc}")
    yield client
    client.close()


@pytest.fixture(scope="session")
def engine(settings: Settings) -> Iterator[docker.DockerClient]:
    """The first Docker engine, the one the single-host worker uses."""
    client = docker.DockerClient(base_url=settings.docker_host or "unix:///var/run/docker.sock")
    try:
        client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means no engine
        pytest.fail(f"No Docker engine answers: {exc}")
    yield client
    client.close()


@pytest.fixture(scope="session")
def registry(settings: Settings) -> Registry:
    if not (settings.registry_url and settings.registry_username and settings.registry_password):
        pytest.fail("farm.env names no registry: run `bash workers/run.sh test`")
    found = Registry(
        settings.registry_url, settings.registry_username,
        settings.registry_password.get_secret_value(),
    )
    try:
        status = requests.get(f"http://{found.url}/v2/", timeout=5).status_code
    except requests.ConnectionError as exc:
        pytest.fail(f"registry {found.url} is down: {exc}")
    assert status == 401, "the registry must ask for authentication"
    return found


@pytest.fixture(scope="session")
def base_image(settings: Settings) -> str:
    return settings.auto_base_image or BASE_IMAGE_FALLBACK


@pytest.fixture
def repo(engine: docker.DockerClient, registry: Registry) -> Iterator[str]:
    """A fresh image repository on the farm's registry; its local images removed afterwards."""
    name = f"{registry.url}/dockyard-test/{uuid.uuid4().hex[:10]}"
    yield name
    for image in engine.images.list(name=name):
        engine.images.remove(image.id, force=True)


@pytest.fixture
def project(tmp_path: Path, base_image: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A small build context with a Dockerfile, and the working directory set to it."""
    root = tmp_path / "project"
    root.mkdir()
    (root / "Dockerfile").write_text(f"FROM {base_image}\nCOPY app.txt /app/app.txt\n")
    (root / "app.txt").write_text(f"{uuid.uuid4()}\n")
    monkeypatch.chdir(root)
    return root


@pytest.fixture(scope="session")
def worker(settings: Settings, redis_client: redis.Redis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Celery worker on the first engine; yields its host id."""
    from workers.app import app

    host_id = f"test-host-1-{uuid.uuid4().hex[:6]}"
    log_path = tmp_path_factory.mktemp("worker") / "worker.log"
    env = {**os.environ, "DOCKYARD_HOST_ID": host_id}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "workers.cli", "worker", "--concurrency", "2"],
            env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    try:
        _wait_for_ping(app, host_id, process, log_path)
        yield host_id
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        app.control.purge()


def _wait_for_ping(app: object, host_id: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"worker exited with {process.returncode}:\n{log_path.read_text()}")
        replies = app.control.ping(timeout=1.0) or []  # type: ignore[attr-defined]
        if any(name.startswith(host_id + "@") for reply in replies for name in reply):
            return
    pytest.fail(f"worker {host_id} did not answer a ping:\n{log_path.read_text()}")
