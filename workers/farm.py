"""The local farm: provision services, start workers in the background (through
``dockyard.workers.launcher``), keep their pid files, stop them.

A pid file (``<state_dir>/<host_id>.pid``) holds the worker's pid and the farm identity that started
it (the checkout and the key prefix): ``dockyard down`` stops its own farm's workers only, unless told
``--host ID`` or ``--all``, so two checkouts sharing a state directory do not stop each other's."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
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


CHECKOUT = str(Path(__file__).resolve().parent.parent)  # the checkout (or installation) this dockyard runs from


def farm_identity(settings: Settings, *, checkout: str = CHECKOUT) -> dict[str, str]:
    """Whose ``dockyard up`` a worker is: the checkout that started it and the farm's key prefix.

    Kept in each pid file: ``dockyard down`` stops only its own farm's workers, even when several
    checkouts share one state directory.
    """
    return {"checkout": checkout, "key_prefix": settings.key_prefix}


@dataclass(frozen=True)
class PidFile:
    """One worker ``start_worker`` started: its host id, pid and the farm identity that started it (None: an
    older pid file, which holds the pid alone)."""

    host_id: str
    pid: int
    farm: dict[str, str] | None


def read_pid_file(path: Path) -> PidFile | None:
    """The pid file at ``path`` (its JSON, or a bare pid of older versions); None if it does not read."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if text.isdigit():
        return PidFile(path.stem, int(text), None)
    try:
        found = json.loads(text)
        farm = found.get("farm")
        return PidFile(path.stem, int(found["pid"]), dict(farm) if isinstance(farm, dict) else None)
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def pid_file_text(pid: int, identity: dict[str, str]) -> str:
    return json.dumps({"pid": pid, "farm": identity}, sort_keys=True)


def start_worker(
    settings: Settings, *, host_id: str, docker_host: str | None, identity: dict[str, str] | None = None,
) -> int:
    """Start a detached worker for ``host_id``; return its pid (kept in ``pid_dir``, beside its log, with the
    farm identity that started it: ``identity``, default this checkout's)."""
    pids = pid_dir(settings)
    pid_file = pids / f"{host_id}.pid"
    found = read_pid_file(pid_file)
    if found is not None and alive(found.pid):
        return found.pid
    worker = WorkerProcess(host_id, docker_host, log_path(settings, host_id)).start()
    pid_file.write_text(pid_file_text(worker.pid, identity or farm_identity(settings)))
    return worker.pid


def wait_for_workers(app: Celery, host_ids: list[str], *, timeout_s: float = 60) -> None:
    """Block until every host's worker answers a ping."""
    wait_for_hosts(app, host_ids, timeout_s=timeout_s)


def chosen_pid_files(
    found: list[PidFile], identity: dict[str, str], *, hosts: list[str] | None = None, every: bool = False,
) -> list[PidFile]:
    """The pid files ``dockyard down`` stops: ``every`` one; those of ``hosts``, whoever started them; else
    those this farm (``identity``) started."""
    if every:
        return found
    if hosts:
        return [each for each in found if each.host_id in hosts]
    return [each for each in found if each.farm == identity]


def stop_workers(
    settings: Settings, *, hosts: list[str] | None = None, every: bool = False, identity: dict[str, str] | None = None,
) -> list[str]:
    """Stop the workers this farm's ``start_worker`` started (or those of ``hosts``, or ``every`` one in
    ``pid_dir``); return their host ids."""
    directory = pid_dir(settings)
    found = [each for path in sorted(directory.glob("*.pid")) if (each := read_pid_file(path)) is not None]
    stopped = []
    for each in chosen_pid_files(found, identity or farm_identity(settings), hosts=hosts, every=every):
        stop_group(each.pid)
        (directory / f"{each.host_id}.pid").unlink(missing_ok=True)
        stopped.append(each.host_id)
    return stopped


def others_workers(settings: Settings, *, identity: dict[str, str] | None = None) -> list[str]:
    """The host ids of live workers in ``pid_dir`` that another farm (checkout or key prefix) started."""
    mine = identity or farm_identity(settings)
    found = [each for path in sorted(pid_dir(settings).glob("*.pid")) if (each := read_pid_file(path)) is not None]
    return [each.host_id for each in found if each.farm != mine and alive(each.pid)]
