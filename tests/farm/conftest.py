"""Fixtures on the real farm: Redis, the Docker engines, the authenticated registry, workers.

``bash workers/run.sh test`` provisions them first and exports ``farm.env``;
a missing service fails the tests that need it (never a skip).
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import os
import secrets
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import docker
import pytest
import redis
import requests

from dockyard.config import defaults
from dockyard.config.settings import Settings, get_settings
from dockyard.config.teams import load_teams
from dockyard.tasks.request.sealing import generate_keypair
from dockyard.workers import farm, launcher, sweep
from dockyard.workers.redis_acl import apply_users, team_users

TEST_REDIS_DB = "13"
TEST_KEY_PREFIX = "dockyard-test:"
SHARED_CONTEXT_ROOT = tempfile.gettempdir()
BASE_IMAGE_FALLBACK = "127.0.0.1:5000/base/busybox:1"
# Celery's own keys in the test database (results, kombu's bindings and unacked messages, the queues)
CELERY_KEY_PATTERNS = (
    "celery-task-meta-*", "_kombu.*", "unacked*", "dockyard.build*", "dockyard.host.*", "dockyard-test.*",
    "*.reply.celery.pidbox",  # remote-control replies (inspect, ping) of the operator app
)


def with_db(url: str, db: str) -> str:
    """``url`` (``redis://``, ``rediss://`` or ``unix://``, with its user, password and query) on database ``db``."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        query = [(name, value) for name, value in parse_qsl(parts.query) if name != "db"] + [("db", db)]
        return url.split("?", 1)[0] + "?" + urlencode(query)
    return urlunsplit(parts._replace(path="/" + db))


# The farm's Redis users (workers/provision.sh): the test process is a caller of the session's
# team A (enqueues, uploads contexts, reads); the workers it starts, and the fixtures that check and
# clean Redis, use the worker user. All on the test database. The session's two teams are its own
# (never the farm's team-a and team-b): declared in a teams file of the session and made with the
# same generator as the farm's (dockyard.workers.redis_acl), removed at the end (``_make_test_teams``).
WORKER_REDIS_URL = ""
CALLER_REDIS_URL = ""
TEAM_B_REDIS_URL = ""
# The context store (workers/provision.sh): the same users, on the test database of the store.
WORKER_STORE_URL = ""
CALLER_STORE_URL = ""
TEAM_B_STORE_URL = ""
TEAM_A = TEAM_B = ""  # the session's teams: A (the suite's caller, pushes anywhere), B (pushes to <registry>/<B>/* only)
TEST_QUEUES = ["dockyard.build*", "dockyard-test.*"]  # the shared queues the session's teams may send to


def _user_url(url: str, username: str, password: str) -> str:
    """``url`` with another user and password."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{username}:{password}@{host}"))


def _make_test_teams(state_dir: str) -> None:
    """Declare the session's teams A and B (a teams file), create their Redis users on the farm's Redis
    and the context store as an operator would (``dockyard teams acl`` lines, by ACL SETUSER through the
    admin user), and point the test process at team A. Without an admin URL (no provisioned farm),
    the farm has its one ``default`` team and the test process uses the worker user."""
    global CALLER_REDIS_URL, CALLER_STORE_URL, TEAM_B_REDIS_URL, TEAM_B_STORE_URL, TEAM_A, TEAM_B
    admin_url, admin_store_url = os.environ.get("DOCKYARD_ADMIN_REDIS_URL"), os.environ.get("DOCKYARD_ADMIN_CONTEXT_STORE_URL")
    if not admin_url or not admin_store_url:
        CALLER_REDIS_URL, CALLER_STORE_URL = WORKER_REDIS_URL, WORKER_STORE_URL
        TEAM_A = TEAM_B = "default"
        return
    suffix = uuid.uuid4().hex[:6]
    TEAM_A, TEAM_B = f"test-a-{suffix}", f"test-b-{suffix}"
    registry_url = os.environ.get("DOCKYARD_REGISTRY_URL", "127.0.0.1:5000")
    passwords = {TEAM_A: secrets.token_hex(16), TEAM_B: secrets.token_hex(16)}
    teams_file = Path(state_dir) / "teams.toml"
    teams_file.write_text(
        f'[teams.{TEAM_A}]\nredis_password_sha256 = ["{hashlib.sha256(passwords[TEAM_A].encode()).hexdigest()}"]\n'
        'push = ["*"]\n\n'
        f'[teams.{TEAM_B}]\nredis_password_sha256 = ["{hashlib.sha256(passwords[TEAM_B].encode()).hexdigest()}"]\n'
        f'push = ["{registry_url}/{TEAM_B}/*"]\n'
    )
    teams = load_teams(str(teams_file))
    made: list[tuple[str, list[str]]] = []
    for url, server in ((admin_url, "farm"), (admin_store_url, "store")):
        admin = redis.Redis.from_url(url)
        lines = team_users(teams, server=server, key_prefix=TEST_KEY_PREFIX, queues=TEST_QUEUES)
        made.append((url, apply_users(admin, lines)))
        admin.close()
    atexit.register(_remove_users, made)
    os.environ["DOCKYARD_TEAMS_FILE"] = str(teams_file)
    os.environ["DOCKYARD_TEAM"] = TEAM_A
    user = teams.teams[TEAM_A].redis_user
    CALLER_REDIS_URL = _user_url(WORKER_REDIS_URL, user, passwords[TEAM_A])
    CALLER_STORE_URL = _user_url(WORKER_STORE_URL, user, passwords[TEAM_A])
    user_b = teams.teams[TEAM_B].redis_user
    TEAM_B_REDIS_URL = _user_url(WORKER_REDIS_URL, user_b, passwords[TEAM_B])
    TEAM_B_STORE_URL = _user_url(WORKER_STORE_URL, user_b, passwords[TEAM_B])


def teams_file_with(path: Path, fields: dict[str, dict[str, int | float]]) -> str:
    """A copy at ``path`` of the session's teams file with more fields for some teams (say
    ``{TEAM_A: {"max_running": 2}}``), for a worker a test starts with it (``DOCKYARD_TEAMS_FILE``);
    the session's own file, and every other worker, are left as they are. Its path."""
    text = Path(os.environ["DOCKYARD_TEAMS_FILE"]).read_text()
    for team, extra in fields.items():
        header = f"[teams.{team}]\n"
        if header not in text:
            raise ValueError(f"the session's teams file declares no team {team}")
        text = text.replace(header, header + "".join(f"{name} = {value!r}\n" for name, value in extra.items()), 1)
    path.write_text(text)
    return str(path)


def _remove_users(made: list[tuple[str, list[str]]]) -> None:
    for url, names in made:
        admin = redis.Redis.from_url(url)
        admin.execute_command("ACL", "DELUSER", *names)
        admin.close()


def _load_farm_env() -> None:
    global WORKER_REDIS_URL, WORKER_STORE_URL
    farm_dir = Path(os.environ.get("DOCKYARD_FARM_DIR", "/var/lib/dockyard-farm"))
    env_file = farm_dir / "farm.env"
    if env_file.exists():
        for line in env_file.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep and not key.startswith("#"):
                os.environ.setdefault(key.strip(), value.strip())
    worker_url = os.environ.get("DOCKYARD_REDIS_URL", "redis://127.0.0.1:6379/0")
    WORKER_REDIS_URL = with_db(worker_url, TEST_REDIS_DB)
    os.environ["DOCKYARD_WORKER_REDIS_URL"] = WORKER_REDIS_URL  # read by nothing in dockyard: for subprocesses of tests
    store_url = os.environ.get("DOCKYARD_CONTEXT_STORE_URL", defaults.CONTEXT_STORE_URL)
    WORKER_STORE_URL = with_db(store_url, TEST_REDIS_DB)
    os.environ["DOCKYARD_KEY_PREFIX"] = TEST_KEY_PREFIX
    state_dir = tempfile.mkdtemp(prefix="pytest-dockyard-state-")
    atexit.register(shutil.rmtree, state_dir, True)
    _make_test_teams(state_dir)
    os.environ["DOCKYARD_REDIS_URL"] = CALLER_REDIS_URL
    os.environ["DOCKYARD_CONTEXT_STORE_URL"] = CALLER_STORE_URL
    if not os.environ.get("DOCKYARD_SEAL_PUBLIC_KEY"):  # a key pair for this run; workers inherit both
        public, private = generate_keypair()
        os.environ["DOCKYARD_SEAL_PUBLIC_KEY"], os.environ["DOCKYARD_SEAL_PRIVATE_KEY"] = public, private
    # Shortened for the session's two workers, so the suite runs in minutes: retries and backoff (the
    # tests count retries, not wait for them), the time limit (a hung build fails a test in 25 s), the
    # lease and heartbeat (takeover tests of the session workers wait seconds, not 20), the visibility
    # timeout (kept above the time limit) and the redelivery cap (2: one kill fewer). Recovery is measured
    # with the defaults users get by tests that start their own workers (tests/farm/test_dead_host.py,
    # test_sentinel.py).
    os.environ["DOCKYARD_TRANSIENT_RETRIES"] = "1"
    os.environ["DOCKYARD_TRANSIENT_BACKOFF_S"] = "0.5"
    os.environ["DOCKYARD_TASK_TIME_LIMIT_S"] = "25"
    os.environ["DOCKYARD_VISIBILITY_TIMEOUT_S"] = "30"
    os.environ["DOCKYARD_LEASE_S"] = "4"
    os.environ["DOCKYARD_HEARTBEAT_INTERVAL_S"] = "0.5"
    os.environ["DOCKYARD_HEARTBEAT_TTL_S"] = "3"
    os.environ["DOCKYARD_MAX_REDELIVERIES"] = "2"
    os.environ["DOCKYARD_METRICS_PORT"] = "0"  # each test worker serves /metrics on a free port
    # the tests' projects live under pytest's temporary directory: the workers may read them there only
    os.environ["DOCKYARD_SHARED_CONTEXT_ROOT"] = SHARED_CONTEXT_ROOT
    # `dockyard up`/`down` in tests: their own worker id and pid files, never the user's farm worker
    os.environ["DOCKYARD_STATE_DIR"] = state_dir
    os.environ["DOCKYARD_DIGEST_CACHE_DIR"] = os.path.join(state_dir, "context-digests")  # not the user's cache
    os.environ["DOCKYARD_HOST_ID"] = f"test-up-{uuid.uuid4().hex[:6]}"
    _write_team_a_env(state_dir)
    get_settings.cache_clear()


TEAM_A_ENV = ""  # the session's team A as an env file (`dockyard up --team-env`), as provisioning writes the farm's teams'


def _write_team_a_env(state_dir: str) -> None:
    """Team A's caller settings in a file: its Redis and store URLs, its team, a pull login of the
    registry's (the farm's team-a user), the public key; never the workers' login or the private key."""
    global TEAM_A_ENV
    farm_dir = Path(os.environ.get("DOCKYARD_FARM_DIR", "/var/lib/dockyard-farm"))
    pull = farm_dir / "registry-team-a.password"
    lines = [
        f"DOCKYARD_TEAM={TEAM_A}", f"DOCKYARD_REDIS_URL={CALLER_REDIS_URL}", f"DOCKYARD_CONTEXT_STORE_URL={CALLER_STORE_URL}",
        f"DOCKYARD_KEY_PREFIX={TEST_KEY_PREFIX}", f"DOCKYARD_REGISTRY_URL={os.environ.get('DOCKYARD_REGISTRY_URL', '127.0.0.1:5000')}",
        f"DOCKYARD_SEAL_PUBLIC_KEY={os.environ['DOCKYARD_SEAL_PUBLIC_KEY']}",
        *([f"DOCKYARD_AUTO_BASE_IMAGE={os.environ['DOCKYARD_AUTO_BASE_IMAGE']}"] if os.environ.get("DOCKYARD_AUTO_BASE_IMAGE") else []),
        *([f"DOCKYARD_PULL_USERNAME=team-a", f"DOCKYARD_PULL_PASSWORD={pull.read_text().strip()}"] if pull.exists() else []),
    ]
    path = Path(state_dir) / "team-a.env"
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    TEAM_A_ENV = str(path)


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


def masked_url(url: str) -> str:
    """``url`` without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(":" + parts.password + "@", ":***@", 1)))


def clear_test_keys(connection: redis.Redis) -> int:
    """Delete dockyard's test keys and Celery's keys from the test database; return how many."""
    deleted = 0
    for pattern in (f"{get_settings().key_prefix}*", *CELERY_KEY_PATTERNS):
        names = list(connection.scan_iter(match=pattern, count=1000))
        for start in range(0, len(names), 500):
            deleted += int(connection.delete(*names[start:start + 500]))
    return deleted


@pytest.fixture(scope="session")
def redis_client(settings: Settings) -> Iterator[redis.Redis]:
    """The test database (13, dedicated to tests): emptied at the start, and its keys deleted at the end.

    The worker user's connection: the test process itself is a caller, which may not write dockyard's keys.
    """
    for url in {settings.effective_cache_url, settings.effective_broker_url, settings.effective_result_backend,
                WORKER_REDIS_URL, settings.context_store_url, WORKER_STORE_URL}:
        if redis.Redis.from_url(url).connection_pool.connection_kwargs.get("db") != int(TEST_REDIS_DB):
            pytest.fail(f"refusing to run: {masked_url(url)} is not the test database {TEST_REDIS_DB}")
    client = redis.Redis.from_url(WORKER_REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        pytest.fail(f"Redis is not reachable at {masked_url(WORKER_REDIS_URL)}: {exc}")
    assert client.connection_pool.connection_kwargs.get("db") == int(TEST_REDIS_DB)
    client.flushdb()  # what an interrupted run left: the tests scan the whole database
    yield client
    clear_test_keys(client)
    left = sorted(name.decode(errors="replace") for name in client.scan_iter(count=1000))
    client.close()
    if left:
        pytest.fail(f"the tests left {len(left)} keys in Redis database {TEST_REDIS_DB}: {left[:20]}")


@functools.lru_cache(maxsize=1)
def context_store_client() -> redis.Redis:
    """The context store's test database as the worker user (for tests that put crafted contexts there)."""
    return redis.Redis.from_url(WORKER_STORE_URL)


def clear_test_contexts(connection: redis.Redis) -> int:
    """Delete the tests' contexts from the context store's test database; return how many keys."""
    names = list(connection.scan_iter(match=f"{get_settings().key_prefix}team:*:ctx:*", count=1000))
    return sum(int(connection.delete(*names[start:start + 500])) for start in range(0, len(names), 500))


@pytest.fixture(scope="session")
def context_store(redis_client: redis.Redis) -> Iterator[redis.Redis]:
    """The context store's test database (the worker user): the tests' contexts deleted at the start and end."""
    client = redis.Redis.from_url(WORKER_STORE_URL)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(f"the context store is not reachable at {masked_url(WORKER_STORE_URL)}: {exc}")
    assert client.connection_pool.connection_kwargs.get("db") == int(TEST_REDIS_DB)
    clear_test_contexts(client)
    yield client
    clear_test_contexts(client)
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
def repo(registry: Registry) -> Iterator[str]:
    """A fresh image repository on the farm's registry; its images removed from every engine afterwards."""
    name = f"{registry.url}/dockyard-test/{uuid.uuid4().hex[:10]}"
    yield name
    for url in farm_docker_hosts():
        client = docker.DockerClient(base_url=url)
        try:
            for image in client.images.list(name=name):
                client.images.remove(image.id, force=True)
            for image in client.images.list(filters={"dangling": True, "label": "io.dockyard.builder=dockyard"}):
                client.images.remove(image.id, force=True)  # rebuilt under a tag that moved on
        except docker.errors.DockerException:
            pass  # an engine a test stopped on purpose
        finally:
            client.close()


@pytest.fixture
def project(tmp_path: Path, base_image: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A small build context with a Dockerfile, and the working directory set to it."""
    root = tmp_path / "project"
    root.mkdir()
    (root / "Dockerfile").write_text(f"FROM {base_image}\nCOPY app.txt /app/app.txt\n")
    (root / "app.txt").write_text(f"{uuid.uuid4()}\n")
    monkeypatch.chdir(root)
    return root


def farm_docker_hosts() -> list[str]:
    """The farm's engines, from ``DOCKYARD_FARM_DOCKER_HOSTS`` (written by provision.sh)."""
    listed = os.environ.get("DOCKYARD_FARM_DOCKER_HOSTS", "unix:///var/run/docker.sock")
    return [url for url in listed.split(",") if url]


@pytest.fixture(scope="session")
def engines() -> Iterator[list[docker.DockerClient]]:
    """Every engine of the farm; the tests of several hosts need two."""
    clients = [docker.DockerClient(base_url=url) for url in farm_docker_hosts()]
    for client in clients:
        try:
            client.ping()
        except Exception as exc:  # noqa: BLE001
            pytest.fail(f"Docker engine {client.api.base_url} does not answer: {exc}")
    if len(clients) < 2:
        pytest.fail("the farm needs two Docker engines: run `bash workers/run.sh test`")
    yield clients
    for client in clients:
        client.close()


@functools.lru_cache(maxsize=1)
def operator_app() -> Any:
    """The app of an operator (the worker user, test database): remote control (ping, inspect) and
    event receivers, which a caller may not use (it may not touch the pidbox nor kombu's unacked keys)."""
    from dockyard.workers.app import create_app

    return create_app(get_settings().model_copy(update={"redis_url": WORKER_REDIS_URL}))


def control_app(app: Any) -> Any:
    """``app``, or the operator's app in place of the test process's caller app."""
    return operator_app() if app.conf.broker_url == get_settings().effective_broker_url else app


class WorkerProcess(launcher.WorkerProcess):
    """The launcher's worker with the tests' concurrency (2); a worker that does not come up fails the test."""

    def __init__(
        self, host_id: str, docker_host: str, log_path: Path, extra_env: dict[str, str] | None = None,
        concurrency: int = 2,
    ) -> None:
        # workers are the worker user (of Redis and of the context store); a test's own extra_env wins
        env = {"DOCKYARD_REDIS_URL": WORKER_REDIS_URL, "DOCKYARD_CONTEXT_STORE_URL": WORKER_STORE_URL, **(extra_env or {})}
        super().__init__(host_id, docker_host, log_path, env, concurrency)

    def start(self) -> WorkerProcess:
        super().start()
        return self

    def wait_ready(self, app: Any, timeout_s: float = 60.0, *, ready: Callable[[str], bool] | None = None) -> None:
        try:
            super().wait_ready(control_app(app), timeout_s, ready=ready)
        except (RuntimeError, TimeoutError) as exc:
            pytest.fail(str(exc))


@pytest.fixture(scope="session")
def farm_workers(
    engines: list[docker.DockerClient], redis_client: redis.Redis, context_store: redis.Redis,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[list[WorkerProcess]]:
    """One real worker per engine (two hosts), each with its own host id and DOCKER_HOST."""
    app = operator_app()
    app.control.purge()
    run = uuid.uuid4().hex[:6]
    logs = tmp_path_factory.mktemp("workers")
    workers = [
        WorkerProcess(f"test-host-{n}-{run}", url, logs / f"host-{n}.log")
        for n, url in enumerate(farm_docker_hosts()[:2], start=1)
    ]
    try:
        with launcher.running(workers, app):
            yield workers
    finally:
        farm.stop_workers(get_settings())  # what a test's `dockyard up` left, in the tests' own state dir
        app.control.purge()
        clear_test_keys(redis_client)
        assert_no_private_dirs_left()


def assert_no_private_dirs_left() -> None:
    """Sweep the private directories of dead worker processes (pool processes the tests killed
    leave theirs; a worker sweeps when it starts); then none of a dead process may remain."""
    sweep.sweep()
    left = sweep.left_behind()
    if left:
        pytest.fail(f"private directories of dead processes not swept: {[path.name for path in left]}")


@pytest.fixture(scope="session")
def worker(farm_workers: list[WorkerProcess]) -> str:
    """The host id of the first worker (any build may run on either)."""
    return farm_workers[0].host_id


@pytest.fixture
def placement_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """For a test whose worker has a build queue of its own, outside the session's pool: placement, which
    picks among the hosts of the caller's own pool (the session's), is off for this test's caller."""
    monkeypatch.setattr("dockyard.tasks.routing.router.placement_queue", lambda args, kwargs: None)
