"""The local farm: provision services, start workers in the background (through
``dockyard.workers.launcher``), keep their pid files, stop them."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from celery import Celery

from dockyard.config.settings import Settings, get_settings
from dockyard.workers.launcher import WorkerProcess, alive, stop_group, wait_for_hosts

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


EXAMPLE_TEAM = "team-a"  # the provisioned team `dockyard up` sends its job as
WORKER_ONLY = ("DOCKYARD_REGISTRY_USERNAME", "DOCKYARD_REGISTRY_PASSWORD", "DOCKYARD_SEAL_PRIVATE_KEY",
               "DOCKYARD_ADMIN_REDIS_URL", "DOCKYARD_ADMIN_CONTEXT_STORE_URL", "DOCKYARD_TEAMS_FILE")


def become_team(team_env: Path) -> Settings:
    """This process is a caller of the team whose env file ``team_env`` is, from now on: the team's
    settings replace the farm's, and the workers' registry login and private key leave its environment."""
    for name in WORKER_ONLY:
        os.environ.pop(name, None)
    for line in team_env.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.startswith("#"):
            os.environ[key.strip()] = value.strip()
    get_settings.cache_clear()
    from dockyard.tasks.celery_app import caller_app

    caller_app.cache_clear()
    return get_settings()


def pid_dir(settings: Settings) -> Path:
    """Where ``dockyard up`` keeps its workers' pid files and logs (``state_dir``, or the farm's)."""
    path = Path(settings.state_dir) if settings.state_dir else Path(settings.farm_dir) / "workers"
    path.mkdir(parents=True, exist_ok=True)
    return path


def log_path(settings: Settings, host_id: str) -> Path:
    """The log file of the worker ``start_worker`` starts for ``host_id`` (in ``pid_dir``)."""
    return pid_dir(settings) / f"{host_id}.log"


def start_worker(settings: Settings, *, host_id: str, docker_host: str | None) -> int:
    """Start a detached worker for ``host_id``; return its pid (kept in ``pid_dir``, beside its log)."""
    pids = pid_dir(settings)
    pid_file = pids / f"{host_id}.pid"
    if pid_file.exists() and alive(int(pid_file.read_text())):
        return int(pid_file.read_text())
    worker = WorkerProcess(host_id, docker_host, log_path(settings, host_id)).start()
    pid_file.write_text(str(worker.pid))
    return worker.pid


def wait_for_workers(app: Celery, host_ids: list[str], *, timeout_s: float = 60) -> None:
    """Block until every host's worker answers a ping."""
    wait_for_hosts(app, host_ids, timeout_s=timeout_s)


def stop_workers(settings: Settings) -> list[str]:
    """Stop every worker ``start_worker`` started; return their host ids."""
    stopped = []
    for pid_file in sorted(pid_dir(settings).glob("*.pid")):
        stop_group(int(pid_file.read_text()))
        pid_file.unlink()
        stopped.append(pid_file.stem)
    return stopped
