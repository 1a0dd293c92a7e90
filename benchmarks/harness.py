"""What every part of the benchmark shares: the bench environment, the engines, workers, cleanup.

The bench runs against the real farm (``workers/provision.sh``) but keeps
its own Redis database and key prefix, so it never touches what tests or a
``dockyard up`` farm hold. ``setup_environment`` must run before anything
imports ``config`` (the settings are read once).
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import sys
import tempfile
import urllib.parse
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors

from dockyard.workers.launcher import WorkerProcess, wait_all_ready

REPO = Path(__file__).resolve().parent.parent
DEFAULT_FARM_DIR = "/var/lib/dockyard-farm"
BENCH_REDIS_DB = 12  # tests use 13, the farm 0
BENCH_KEY_PREFIX = "dockyard-bench:"
BENCH_REPOSITORY = "dockyard-bench"  # images are named <registry>/dockyard-bench/<run>-<what>
ROUND_LABEL = "io.dockyard.bench.round"  # marks the containers of one measured round
# Celery's own keys in the bench database (the broker queues and the result backend)
CELERY_KEY_PATTERNS = ("celery-task-meta-*", "_kombu.*", "unacked*", "dockyard.build*", "dockyard.host.*")


def farm_dir() -> Path:
    return Path(os.environ.get("DOCKYARD_FARM_DIR", DEFAULT_FARM_DIR))


def _with_db(url: str, db: int) -> str:
    """``url`` (``redis://``, ``rediss://``, ``unix://``; user, password and query kept) on database ``db``."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "unix":
        query = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query) if k != "db"] + [("db", str(db))]
        return url.split("?", 1)[0] + "?" + urllib.parse.urlencode(query)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{db}"))


def setup_environment(*, redis_db: int = BENCH_REDIS_DB, key_prefix: str = BENCH_KEY_PREFIX) -> None:
    """Read farm.env (exported values win), then point dockyard at the bench's database and prefix."""
    env_file = farm_dir() / "farm.env"
    if env_file.exists():
        for line in env_file.read_text().splitlines():
            name, sep, value = line.partition("=")
            if sep and not name.startswith("#"):
                os.environ.setdefault(name.strip(), value.strip())
    # The bench process starts its workers, purges queues and empties its database: it is the farm's
    # operator, so it keeps the worker user's URL, and its callers are the one team of a farm with no
    # teams file (``default``, docs/security.md), so the farm's own teams and their queues are never used.
    redis_url = os.environ.get("DOCKYARD_REDIS_URL", "redis://127.0.0.1:6379/0")
    os.environ["DOCKYARD_REDIS_URL"] = _with_db(redis_url, redis_db)
    if os.environ.get("DOCKYARD_CONTEXT_STORE_URL"):  # the context store's bench database
        os.environ["DOCKYARD_CONTEXT_STORE_URL"] = _with_db(os.environ["DOCKYARD_CONTEXT_STORE_URL"], redis_db)
    os.environ.pop("DOCKYARD_TEAMS_FILE", None)
    os.environ["DOCKYARD_TEAM"] = "default"
    for separate in ("DOCKYARD_BROKER_URL", "DOCKYARD_RESULT_BACKEND", "DOCKYARD_CACHE_URL"):
        os.environ.pop(separate, None)  # everything of the bench lives in its one database
    os.environ["DOCKYARD_KEY_PREFIX"] = key_prefix


def docker_hosts() -> list[str]:
    """The farm's engines, from ``DOCKYARD_FARM_DOCKER_HOSTS`` (written by provision.sh)."""
    listed = os.environ.get("DOCKYARD_FARM_DOCKER_HOSTS", "unix:///var/run/docker.sock")
    return [url for url in listed.split(",") if url]


def registry() -> tuple[str, str, str]:
    """(url, username, password) of the farm's registry."""
    url = os.environ.get("DOCKYARD_REGISTRY_URL", "")
    user = os.environ.get("DOCKYARD_REGISTRY_USERNAME", "")
    password = os.environ.get("DOCKYARD_REGISTRY_PASSWORD", "")
    if not (url and user and password):
        raise SystemExit("farm.env names no registry: run `bash workers/provision.sh` (or benchmarks/run.sh)")
    return url, user, password


def base_image() -> str:
    return os.environ.get("DOCKYARD_AUTO_BASE_IMAGE") or "127.0.0.1:5000/base/busybox:1"


def engine(url: str, *, logged_in: bool = True) -> docker.DockerClient:
    """A docker-py client for ``url``; logged in (in memory) to the farm's registry for pulls."""
    client = docker.DockerClient(base_url=url, timeout=600)
    if logged_in:
        reg, user, password = registry()
        client.login(username=user, password=password, registry=reg)
    return client


def new_round() -> str:
    return uuid.uuid4().hex


def write_context(directory: Path, round_id: str, *, sleep_s: float) -> Path:
    """A build context: the farm's base image and one RUN step whose output is unique to the round.

    The ``LABEL`` line ties the RUN step's container to this round, so engine
    events can be counted for this round alone, whatever else the engines run.
    """
    directory.mkdir(parents=True, exist_ok=True)
    run = f"sleep {sleep_s:g} && echo {round_id} > /built" if sleep_s else f"echo {round_id} > /built"
    (directory / "Dockerfile").write_text(
        f"FROM {base_image()}\nLABEL {ROUND_LABEL}={round_id}\nRUN {run}\n"
    )
    return directory


@dataclass
class EngineCount:
    """Containers of one round seen on each engine: starts are RUN steps executed."""

    starts: dict[str, int] = field(default_factory=dict)
    creates: dict[str, int] = field(default_factory=dict)

    @property
    def runs(self) -> int:
        return sum(self.starts.values())


def count_round(clients: Sequence[docker.DockerClient], round_id: str, since: float, until: float) -> EngineCount:
    """Container create and start events carrying the round's label, on every engine, in [since, until].

    Engines are named ``engine1``, ``engine2``... in the order given.
    """
    found = EngineCount()
    for number, client in enumerate(clients, start=1):
        events = client.events(
            since=int(math.floor(since)) - 1, until=int(math.ceil(until)) + 1, decode=True,
            filters={"type": "container", "event": ["create", "start"], "label": f"{ROUND_LABEL}={round_id}"},
        )
        creates = starts = 0
        try:
            for event in events:
                action = event.get("Action") or event.get("status")
                creates += action == "create"
                starts += action == "start"
        finally:
            events.close()
        found.creates[f"engine{number}"] = creates
        found.starts[f"engine{number}"] = starts
    return found


def labelled_images(client: docker.DockerClient, label: str, *, all_layers: bool = False) -> set[str]:
    """Ids of the images carrying ``label`` (``name`` or ``name=value``), intermediate layers too if asked."""
    return {image.id for image in client.images.list(all=all_layers, filters={"label": label})}


def remove_images(
    clients: Iterable[docker.DockerClient], *, label: str, repositories: Iterable[str] = (), passes: int = 8
) -> dict[str, Any]:
    """Remove from every engine the images carrying ``label`` and those tagged in ``repositories``.

    Leaves first: a parent still listed after its child went is taken on a
    later pass (its 409 is not an error until the last pass); passes after
    the first include intermediate layers. Returns ``{"removed", "errors"}``.
    """
    removed = 0
    errors: list[str] = []
    repositories = list(repositories)
    for client in clients:
        for attempt in range(passes):
            try:
                ids = labelled_images(client, label, all_layers=attempt > 0)
                for repository in repositories:
                    ids.update(image.id for image in client.images.list(name=repository))
            except docker.errors.DockerException as exc:
                errors.append(f"{client.api.base_url}: list: {exc}")
                break
            if not ids:
                break
            progress = False
            for image_id in sorted(ids):
                try:
                    client.images.remove(image_id, force=True)
                    removed += 1
                    progress = True
                except docker.errors.ImageNotFound:
                    progress = True
                except docker.errors.APIError as exc:
                    if exc.status_code != 409 or attempt == passes - 1:  # 409: a parent whose child goes first
                        errors.append(f"{client.api.base_url}: {image_id}: {exc}")
            if not progress and attempt > 0:
                break
    return {"removed": removed, "errors": errors[:10]}


def remove_bench_images(clients: Iterable[docker.DockerClient], repositories: Iterable[str]) -> int:
    """Remove the bench's images from every engine; return how many were removed.

    That is every image of ``repositories`` and every image carrying the
    round label (all the bench builds; concurrent builds of one tag leave
    untagged ones).
    """
    report = remove_images(clients, label=ROUND_LABEL, repositories=repositories)
    for error in report["errors"]:
        print(f"bench: could not remove {error}", file=sys.stderr)
    return int(report["removed"])


def leftover_bench_images(clients: Iterable[docker.DockerClient]) -> int:
    """Images carrying the round label still on the engines, intermediate layers included."""
    return sum(len(labelled_images(client, ROUND_LABEL, all_layers=True)) for client in clients)


def percentile(samples: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


@contextlib.contextmanager
def temp_dir(prefix: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def bench_worker(host_id: str, docker_host: str, log_path: Path, *, concurrency: int = 2) -> WorkerProcess:
    """A real ``dockyard worker`` for one host and its engine (not started), through the launcher."""
    # two workers on one machine: each takes a free /metrics port
    return WorkerProcess(host_id, docker_host, log_path, {"DOCKYARD_METRICS_PORT": "0"}, concurrency, cwd=REPO)


def bench_workers(name: str, engine_urls: Sequence[str], log_dir: Path, *, concurrency: int = 2) -> list[WorkerProcess]:
    """One worker per engine, ``<name>-1``, ``<name>-2``..., logging to ``log_dir/worker-<n>.log`` (not started)."""
    return [
        bench_worker(f"{name}-{index}", url, log_dir / f"worker-{index}.log", concurrency=concurrency)
        for index, url in enumerate(engine_urls, start=1)
    ]


def start_workers(app: Any, workers: Sequence[WorkerProcess], *, timeout_s: float = 90) -> None:
    """Start ``workers`` and wait until every one is ready (``wait_for_workers``)."""
    for worker in workers:
        worker.start()
    wait_for_workers(app, workers, timeout_s=timeout_s)


def print_log_tails(workers: Iterable[WorkerProcess]) -> None:
    """The end of each worker's log, on stderr (after a failure)."""
    for worker in workers:
        print(f"--- worker {worker.host_id} log tail\n{worker.log_tail()}", file=sys.stderr)


def wait_for_workers(app: Any, workers: Sequence[WorkerProcess], *, timeout_s: float = 90) -> None:
    """Until every worker answers a ping and heartbeats into Redis (the fast path needs both)."""
    from dockyard.config.settings import get_settings
    from dockyard.tasks.farm import hosts
    from dockyard.tasks.keyspace import redis_for

    settings = get_settings()
    connection = redis_for(settings)
    wait_all_ready(app, workers, timeout_s=timeout_s,
                   ready=lambda host_id: hosts.is_alive(connection, settings, host_id))


def delete_bench_keys(key_prefix: str = BENCH_KEY_PREFIX) -> int:
    """Delete dockyard's bench keys and Celery's keys in the bench database; return how many."""
    from dockyard.config.settings import get_settings
    from dockyard.tasks.keyspace import redis_for

    connection = redis_for(get_settings())
    deleted = 0
    for pattern in (key_prefix + "*", *CELERY_KEY_PATTERNS):
        names = list(connection.scan_iter(match=pattern, count=1000))
        for start in range(0, len(names), 500):
            deleted += int(connection.delete(*names[start:start + 500]))
    return deleted


def remaining_keys(limit: int = 20) -> list[str]:
    """Whatever is left in the bench database (should be nothing after cleanup)."""
    from dockyard.config.settings import get_settings
    from dockyard.tasks.keyspace import redis_for

    connection = redis_for(get_settings())
    names = []
    for name in connection.scan_iter(count=1000):
        names.append(name.decode(errors="replace"))
        if len(names) >= limit:
            break
    return names
