"""compose.yaml validates with the compose tool the provisioning script installs."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def compose(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("docker-compose")
    assert tool, "docker-compose is missing: run `bash workers/run.sh test`"
    return subprocess.run([tool, "-f", str(ROOT / "compose.yaml"), *args], capture_output=True, text=True, timeout=60)


def test_compose_file_validates() -> None:
    checked = compose("config", "-q")
    assert checked.returncode == 0, checked.stderr


def test_redis_persists_and_never_evicts_and_workers_get_the_docker_socket() -> None:
    resolved = compose("config")
    assert resolved.returncode == 0, resolved.stderr
    services = yaml.safe_load(resolved.stdout)["services"]
    redis_command = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in redis_command and "--maxmemory-policy noeviction" in redis_command
    worker = services["worker"]
    assert any("/var/run/docker.sock" in str(volume) for volume in worker["volumes"])
    assert worker["environment"]["DOCKYARD_HOST_ID"]
    assert "flower" in " ".join(services["flower"]["command"])


def test_contexts_have_a_bounded_store_of_their_own_that_workers_use() -> None:
    resolved = compose("config")
    assert resolved.returncode == 0, resolved.stderr
    services = yaml.safe_load(resolved.stdout)["services"]
    store = services["contexts"]
    store_command = " ".join(store["command"])
    assert "--maxmemory $$((BUDGET / 8 * 7))" in store_command and "--maxmemory-policy volatile-ttl" in store_command
    assert store["environment"]["BUDGET"] == "2147483648", "the default budget, 2 GiB (seven eighths of it maxmemory)"
    assert "--requirepass" in store_command
    assert "@contexts:6379/0" in services["worker"]["environment"]["DOCKYARD_CONTEXT_STORE_URL"]
