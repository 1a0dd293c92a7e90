"""The local farm: provision services, start workers in the background, stop them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from celery import Celery

from config.settings import Settings, get_settings

PROVISION_SCRIPT = Path(__file__).with_name("provision.sh")


def provision(*, hosts: int = 1) -> Path:
    """Run the idempotent provisioning script; return the path of its ``farm.env``."""
    completed = subprocess.run(
        ["bash", str(PROVISION_SCRIPT), "--hosts", str(hosts)],
        check=True, stdout=subprocess.PIPE, text=True,
    )
    return Path(completed.stdout.strip().splitlines()[-1])


def load_farm_env(path: Path) -> Settings:
    """Export ``farm.env``'s settings (those already set win) and re-read the settings."""
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.startswith("#"):
            os.environ.setdefault(key.strip(), value.strip())
    get_settings.cache_clear()
    return get_settings()


def pid_dir(settings: Settings) -> Path:
    path = Path(settings.farm_dir) / "workers"
    path.mkdir(parents=True, exist_ok=True)
    return path


def start_worker(settings: Settings, *, host_id: str, docker_host: str | None) -> int:
    """Start a detached worker for ``host_id``; return its pid (kept in the farm dir)."""
    pids = pid_dir(settings)
    pid_file = pids / f"{host_id}.pid"
    if pid_file.exists() and _alive(int(pid_file.read_text())):
        return int(pid_file.read_text())
    env = {**os.environ, "DOCKYARD_HOST_ID": host_id}
    if docker_host:
        env["DOCKYARD_DOCKER_HOST"] = docker_host
    log = open(pids / f"{host_id}.log", "ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "workers.cli", "worker"],
        env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    pid_file.write_text(str(process.pid))
    return process.pid


def wait_for_workers(app: Celery, host_ids: list[str], *, timeout_s: float = 60) -> None:
    """Block until every host's worker answers a ping."""
    deadline = time.monotonic() + timeout_s
    wanted = set(host_ids)
    while time.monotonic() < deadline:
        replies = app.control.ping(timeout=1.0) or []
        answered = {name.split("@", 1)[0] for reply in replies for name in reply}
        if wanted <= answered:
            return
    raise TimeoutError(f"workers {sorted(wanted)} did not answer within {timeout_s:.0f} s")


def stop_workers(settings: Settings) -> list[str]:
    """Stop every worker ``start_worker`` started; return their host ids."""
    stopped = []
    for pid_file in sorted(pid_dir(settings).glob("*.pid")):
        pid = int(pid_file.read_text())
        if _alive(pid):
            os.killpg(pid, signal.SIGTERM)
            _wait_gone(pid)
        pid_file.unlink()
        stopped.append(pid_file.stem)
    return stopped


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_gone(pid: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _alive(pid):
        os.killpg(pid, signal.SIGKILL)
