"""Two teams on one farm (issue 20): what one team sends never reads, writes, deletes or pushes the other's.

The session's teams A and B are declared and given Redis users as an operator
does (``tests/farm/conftest.py:_make_test_teams``: a teams file, ``dockyard
teams acl`` lines, ACL SETUSER). The test process is team A; ``as_team_b``
makes it team B's caller for a block (B's Redis and store users, B's team).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import redis

from dockyard.config.settings import get_settings, team_queue
from dockyard.tasks import client
from dockyard.tasks.celery_app import caller_app
from dockyard.tasks.errors import InvalidInput, NotPermitted
from dockyard.tasks.task_names import BUILD_TASK, PUSH_TASK
from tests.farm import conftest
from tests.farm.conftest import Registry

TIMEOUT_S = 120
WORKER_ONLY = ("DOCKYARD_REGISTRY_USERNAME", "DOCKYARD_REGISTRY_PASSWORD", "DOCKYARD_SEAL_PRIVATE_KEY",
               "DOCKYARD_ADMIN_REDIS_URL", "DOCKYARD_ADMIN_CONTEXT_STORE_URL")


@pytest.fixture(autouse=True)
def two_teams() -> None:
    if conftest.TEAM_A == conftest.TEAM_B:
        pytest.fail("the farm has no admin URL to make the session's teams: run `bash workers/run.sh test`")


def _reset_caches() -> None:
    get_settings.cache_clear()
    caller_app.cache_clear()


@contextmanager
def as_team_b(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This process is team B's caller inside the block: B's users, B's team, no worker secrets."""
    with monkeypatch.context() as patch:
        patch.setenv("DOCKYARD_TEAM", conftest.TEAM_B)
        patch.setenv("DOCKYARD_REDIS_URL", conftest.TEAM_B_REDIS_URL)
        patch.setenv("DOCKYARD_CONTEXT_STORE_URL", conftest.TEAM_B_STORE_URL)
        _reset_caches()
        try:
            yield
        finally:
            _reset_caches()
    _reset_caches()


def _project(root: Path, content: str, base_image: str, *, secret: bool = False) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    mount = "RUN --mount=type=secret,id=token test -s /run/secrets/token\n" if secret else ""
    (root / "Dockerfile").write_text(f"FROM {base_image}\nCOPY app.txt /app/app.txt\n{mount}")
    (root / "app.txt").write_text(content)
    return root


def test_a_team_pushes_with_the_farms_login_only_to_its_own_repositories(
    tmp_path: Path, base_image: str, registry: Registry, worker: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Must show 1: B's push to A's repository is refused, naming B and its pattern; A's tag keeps A's digest."""
    a_repo = f"{registry.url}/{conftest.TEAM_A}/app-{uuid.uuid4().hex[:6]}"
    a_dir = _project(tmp_path / "a", f"team A {uuid.uuid4()}\n", base_image)
    client.build(a_repo, tag="prod", path=str(a_dir))
    a_digest = client.push(a_repo, tag="prod", timeout_s=TIMEOUT_S)["digest"]
    assert registry.manifest_digest(a_repo.removeprefix(registry.url + "/"), "prod") == a_digest
    b_dir = _project(tmp_path / "b", f"team B {uuid.uuid4()}\n", base_image)
    with as_team_b(monkeypatch):
        client.build(a_repo, tag="prod", path=str(b_dir))  # building under any name is allowed: tags are the team's
        with pytest.raises(NotPermitted, match=rf"Team {conftest.TEAM_B} may push with the farm's registry login only to "
                                               rf"{registry.url}/{conftest.TEAM_B}/\*"):
            client.push(a_repo, tag="prod", timeout_s=TIMEOUT_S)
        b_repo = f"{registry.url}/{conftest.TEAM_B}/app-{uuid.uuid4().hex[:6]}"
        client.build(b_repo, tag="prod", path=str(b_dir))
        b_digest = client.push(b_repo, tag="prod", timeout_s=TIMEOUT_S)["digest"]
    assert registry.manifest_digest(a_repo.removeprefix(registry.url + "/"), "prod") == a_digest, "A's tag is A's"
    assert registry.manifest_digest(b_repo.removeprefix(registry.url + "/"), "prod") == b_digest != a_digest


def test_an_image_id_alone_is_no_right_to_push_it(
    tmp_path: Path, base_image: str, registry: Registry, worker: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Must show 2: B sends a push by name with A's image id (from A's result): refused. B sends the same
    content itself: nothing is built again, and its push of that image works."""
    content = f"shared {uuid.uuid4()}\n"
    a_built = client.build(f"{registry.url}/{conftest.TEAM_A}/src", path=str(_project(tmp_path / "a", content, base_image)))
    assert a_built["cache"] == "built"
    stolen = f"{registry.url}/{conftest.TEAM_B}/stolen-{uuid.uuid4().hex[:6]}"
    with as_team_b(monkeypatch):
        sent = caller_app().send_task(
            PUSH_TASK, kwargs={"image_name": stolen, "tag": "v1", "image_id": a_built["image_id"]},
            queue=team_queue(get_settings().build_queue, conftest.TEAM_B),
        )
        with pytest.raises(NotPermitted, match=rf"Team {conftest.TEAM_B} has no build of image {a_built['image_id']}"):
            sent.get(timeout=TIMEOUT_S)
        assert registry.manifest_digest(stolen.removeprefix(registry.url + "/"), "v1") is None
        b_built = client.build(stolen, tag="v1", path=str(_project(tmp_path / "b", content, base_image)))
        assert b_built["cache"] in ("hit", "joined") and b_built["image_id"] == a_built["image_id"], b_built
        pushed = client.push(stolen, tag="v1", timeout_s=TIMEOUT_S)
    assert registry.manifest_digest(stolen.removeprefix(registry.url + "/"), "v1") == pushed["digest"]


class LoginRecorder:
    """A registry on loopback that refuses every login and records the users that tried."""

    def __init__(self) -> None:
        self.users: list[str] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                header = self.headers.get("Authorization", "")
                if header.startswith("Basic "):
                    recorder.users.append(base64.b64decode(header[6:]).decode().split(":", 1)[0])
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="recorder"')
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_HEAD = do_GET  # noqa: N815

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_seal_lifted_from_a_teams_message_opens_for_no_other_team(
    tmp_path: Path, base_image: str, worker: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Must show 3: A's sealed credentials, taken from A's queued message, put in B's message: refused
    before any login (the registry sees none); in A's own message the same seal logs in."""
    recorder = LoginRecorder()
    try:
        user = f"a-{uuid.uuid4().hex[:8]}"
        repository = f"{recorder.address}/{conftest.TEAM_A}/app"
        built = client.build(repository, path=str(_project(tmp_path / "a", f"{uuid.uuid4()}\n", base_image)))
        nobody = team_queue(f"dockyard-test.nobody-{uuid.uuid4().hex[:6]}", conftest.TEAM_A)  # a queue no worker takes
        signature = client.push_signature(
            repository, tag=built["tag"], credentials={"username": user, "password": "pw", "registry_url": recorder.address},
        )
        signature.apply_async(queue=nobody)
        raw = redis_client.lpop(nobody)  # what a reader of A's queue would see
        assert raw is not None
        message = json.loads(raw)
        args, kwargs, _embed = json.loads(base64.b64decode(message["body"]))
        lifted = kwargs["credentials"]
        assert set(lifted) == {"sealed", "repository"} and user not in json.dumps(kwargs)
        with as_team_b(monkeypatch):
            sent = caller_app().send_task(PUSH_TASK, kwargs=kwargs, queue=team_queue(get_settings().build_queue, conftest.TEAM_B))
            with pytest.raises(InvalidInput, match=f"could not be opened for .*team {conftest.TEAM_B}"):
                sent.get(timeout=TIMEOUT_S)
        assert recorder.users == [], "B's message made no login"
        own = caller_app().send_task(PUSH_TASK, kwargs=kwargs, queue=team_queue(get_settings().build_queue, conftest.TEAM_A))
        with pytest.raises(Exception):  # noqa: B017 - the recorder refuses every login
            own.get(timeout=TIMEOUT_S)
        assert user in recorder.users, "in A's own message the seal opens and logs in"
    finally:
        recorder.close()


def test_a_message_that_claims_another_teams_queue_runs_as_the_team_whose_queue_it_came_from(
    tmp_path: Path, base_image: str, registry: Registry, worker: str, redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """B writes a push into its own queue that names A's queue as its routing key, for an image A has,
    to A's repository: the worker runs it as B (the queue it came from) and refuses it."""
    built = client.build(f"{registry.url}/{conftest.TEAM_A}/claimed", path=str(_project(tmp_path, f"{uuid.uuid4()}\n", base_image)))
    target = f"{registry.url}/{conftest.TEAM_A}/forged-{uuid.uuid4().hex[:6]}"
    with as_team_b(monkeypatch):
        parked = team_queue(f"dockyard-test.nobody-{uuid.uuid4().hex[:6]}", conftest.TEAM_B)
        sent = caller_app().send_task(PUSH_TASK, kwargs={"image_name": target, "tag": "v1", "image_id": built["image_id"]}, queue=parked)
        raw = redis_client.lpop(parked)  # B's own message, as B wrote it
        assert raw is not None
        message = json.loads(raw)
        message["properties"]["delivery_info"] = {"exchange": "", "routing_key": team_queue(get_settings().build_queue, conftest.TEAM_A)}
        b_redis = redis.Redis.from_url(conftest.TEAM_B_REDIS_URL)
        b_redis.lpush(team_queue(get_settings().build_queue, conftest.TEAM_B), json.dumps(message))
        with pytest.raises(NotPermitted, match=f"Team {conftest.TEAM_B} may push"):
            sent.get(timeout=TIMEOUT_S)
    assert registry.manifest_digest(target.removeprefix(registry.url + "/"), "v1") is None


def _refused(call: object) -> str:
    """The name of the error a call to ``call`` raises (it must raise one)."""
    try:
        call()  # type: ignore[operator]
    except redis.RedisError as exc:
        return type(exc).__name__
    raise AssertionError("the call was allowed")


def test_a_teams_redis_users_reach_nothing_of_another_team(
    tmp_path: Path, base_image: str, worker: str, context_store: redis.Redis, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Must show 4: with B's credentials for Redis and the store, each access to A's work or to any queue fails
    (NoPermissionError); B's own work goes through the whole client API (see the next test)."""
    settings = get_settings()
    on_output: list[str] = []
    built = client.build(f"{settings.registry_url}/{conftest.TEAM_A}/private", path=str(_project(tmp_path, f"{uuid.uuid4()}\n", base_image)),
                         on_output=on_output.append)
    sent = caller_app().send_task(BUILD_TASK, kwargs={"spec": client.prepare_and_upload(
        f"{settings.registry_url}/{conftest.TEAM_A}/private", {"path": str(tmp_path)}, settings).model_dump()})
    sent.get(timeout=TIMEOUT_S)
    prefix = settings.key_prefix
    a_ns = f"{prefix}team:{conftest.TEAM_A}:"
    a_result = f"celery-task-meta-{conftest.TEAM_A}.{sent.id}"
    worker_redis = redis.Redis.from_url(conftest.WORKER_REDIS_URL)
    assert worker_redis.exists(a_result), "A's result is where the check looks"
    a_output = next(iter(worker_redis.scan_iter(match=f"{a_ns}out:*")), None)
    a_chunks = sorted(context_store.scan_iter(match=f"{a_ns}ctx:*"))
    assert a_output is not None and a_chunks, "A's live output and context are there to be reached"
    b = redis.Redis.from_url(conftest.TEAM_B_REDIS_URL)
    b_store = redis.Redis.from_url(conftest.TEAM_B_STORE_URL)
    queues = [team_queue(settings.build_queue, team) for team in (conftest.TEAM_A, conftest.TEAM_B)]
    pubsub = b.pubsub()
    refusals = {
        "list every key": lambda: list(b.scan_iter(count=100)),
        "KEYS": lambda: b.keys("*"),
        "list channels": lambda: b.pubsub_channels(),
        "read A's result": lambda: b.get(a_result),
        "subscribe to A's result": lambda: (pubsub.subscribe(a_result), pubsub.get_message(timeout=1.0)),
        "read A's live output": lambda: b.xrange(a_output),
        "write A's cacheable entry": lambda: b.set(f"{a_ns}call:{'0' * 64}", "{}"),
        "write A's tag location": lambda: b.set(f"{a_ns}image:x:1", "{}"),
        "claim an image for B": lambda: b.set(f"{prefix}team:{conftest.TEAM_B}:owns:{built['image_id']}", "1"),
        "write the build cache": lambda: b.set(f"{prefix}build:{'0' * 64}", "{}"),
        "delete A's context chunk": lambda: b_store.delete(a_chunks[0]),
        "overwrite A's context chunk": lambda: b_store.set(a_chunks[0], b"x"),
        "list the store": lambda: list(b_store.scan_iter(count=100)),
    }
    for queue in queues:
        refusals |= {
            f"read {queue}": lambda q=queue: b.lrange(q, 0, -1),
            f"delete {queue}": lambda q=queue: b.delete(q),
            f"trim {queue}": lambda q=queue: b.ltrim(q, 0, 0),
            f"pop {queue}": lambda q=queue: b.rpop(q),
            f"blocking pop {queue}": lambda q=queue: b.brpop([q], timeout=1),
        }
    found = {what: _refused(call) for what, call in refusals.items()}
    assert found == dict.fromkeys(refusals, "NoPermissionError")


B_CLIENT = r'''
import json, os, sys, uuid
from dockyard.tasks import client
from dockyard.tasks.cache.single_flight import cacheable
from dockyard.config.settings import get_settings

project, repo = sys.argv[1], sys.argv[2]
settings = get_settings()
held = {name: name in os.environ for name in ("DOCKYARD_REGISTRY_PASSWORD", "DOCKYARD_SEAL_PRIVATE_KEY")}
lines = []
built = client.build(repo, tag="one", path=project, on_output=lines.append)
again = client.build(repo, tag="one", path=project)
pushed = client.push(repo, tag="one")
chain = client.build_and_push(repo, tag="two", path=project).apply_async()
chained = chain.get(timeout=120)
calls = []

@cacheable
def twice(n):
    calls.append(n)
    return n * 2

answers = [twice(21), twice(21)]
print(json.dumps({
    "team": settings.team, "held": held, "registry_password": settings.registry_password is not None,
    "built": built["cache"], "again": again["cache"], "again_duration": "duration_s" in again,
    "pushed": pushed["digest"], "chained": chained["digest"], "output": len(lines), "cacheable": [answers, calls],
}))
'''


def _team_b_env() -> dict[str, str]:
    """A caller process of team B from a clean environment: B's users and team, the public key, a pull login."""
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), "DOCKYARD_TEAM": conftest.TEAM_B,
           "DOCKYARD_REDIS_URL": conftest.TEAM_B_REDIS_URL, "DOCKYARD_CONTEXT_STORE_URL": conftest.TEAM_B_STORE_URL}
    for line in Path(conftest.TEAM_A_ENV).read_text().splitlines():
        name, _, value = line.partition("=")
        if name in ("DOCKYARD_KEY_PREFIX", "DOCKYARD_REGISTRY_URL", "DOCKYARD_SEAL_PUBLIC_KEY", "DOCKYARD_AUTO_BASE_IMAGE",
                    "DOCKYARD_PULL_USERNAME", "DOCKYARD_PULL_PASSWORD"):
            env[name] = value
    env["DOCKYARD_DIGEST_CACHE_DIR"] = os.environ["DOCKYARD_DIGEST_CACHE_DIR"]
    return env


def test_a_team_caller_holds_no_worker_secret_and_its_whole_api_works_on_its_own_work(
    tmp_path: Path, base_image: str, registry: Registry, worker: str,
) -> None:
    """Must shows 4 and 7: a team B caller process from a clean environment (no workers' registry login,
    no private key) builds (with live output), answers a repeat from the fast path, pushes, chains and
    caches a call, all on B's own work."""
    env = _team_b_env()
    assert not any(name in env for name in WORKER_ONLY)
    project = _project(tmp_path / "b", f"b {uuid.uuid4()}\n", base_image)
    repo = f"{registry.url}/{conftest.TEAM_B}/api-{uuid.uuid4().hex[:6]}"
    done = subprocess.run([sys.executable, "-c", B_CLIENT, str(project), repo], env=env, capture_output=True, text=True,
                          timeout=300, cwd=Path(__file__).parents[2])
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["team"] == conftest.TEAM_B
    assert report["held"] == {"DOCKYARD_REGISTRY_PASSWORD": False, "DOCKYARD_SEAL_PRIVATE_KEY": False}
    assert report["registry_password"] is False
    assert (report["built"], report["again"], report["again_duration"]) == ("built", "hit", False), report
    assert report["output"] > 0, "B's live output reached B"
    assert registry.manifest_digest(repo.removeprefix(registry.url + "/"), "one") == report["pushed"]
    assert registry.manifest_digest(repo.removeprefix(registry.url + "/"), "two") == report["chained"]
    assert report["cacheable"] == [[42, 42], [21]]


def test_shared_content_builds_once_but_secrets_keep_their_owner(
    tmp_path: Path, base_image: str, registry: Registry, worker: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Must show 5: the same content from both teams is one build; with build secrets, two."""
    content = f"same {uuid.uuid4()}\n"
    a_plain = client.build(f"{registry.url}/{conftest.TEAM_A}/same", path=str(_project(tmp_path / "a", content, base_image)))
    token = tmp_path / "token.txt"
    token.write_text("team secret\n")
    secret = [f"id=token,src={token}"]
    a_secret = client.build(f"{registry.url}/{conftest.TEAM_A}/same", tag="s", build_backend="buildx", secrets=secret,
                            path=str(_project(tmp_path / "as", content, base_image, secret=True)))
    with as_team_b(monkeypatch):
        b_plain = client.build(f"{registry.url}/{conftest.TEAM_B}/same", path=str(_project(tmp_path / "b", content, base_image)))
        b_secret = client.build(f"{registry.url}/{conftest.TEAM_B}/same", tag="s", build_backend="buildx", secrets=secret,
                                path=str(_project(tmp_path / "bs", content, base_image, secret=True)))
    assert (a_plain["cache"], b_plain["cache"]) == ("built", "hit") and a_plain["image_id"] == b_plain["image_id"]
    assert (a_secret["cache"], b_secret["cache"]) == ("built", "built"), (a_secret, b_secret)


def test_the_audit_lists_each_teams_pushes(
    tmp_path: Path, base_image: str, registry: Registry, worker: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Must show 6: `dockyard audit` shows A's and B's pushes with team, repository and digest."""
    since = time.time()
    a_repo = f"{registry.url}/{conftest.TEAM_A}/audited-{uuid.uuid4().hex[:6]}"
    client.build(a_repo, path=str(_project(tmp_path / "a", f"{uuid.uuid4()}\n", base_image)), tag="v1")
    a_digest = client.push(a_repo, tag="v1", timeout_s=TIMEOUT_S)["digest"]
    with as_team_b(monkeypatch):
        b_repo = f"{registry.url}/{conftest.TEAM_B}/audited-{uuid.uuid4().hex[:6]}"
        client.build(b_repo, path=str(_project(tmp_path / "b", f"{uuid.uuid4()}\n", base_image)), tag="v1")
        b_digest = client.push(b_repo, tag="v1", timeout_s=TIMEOUT_S)["digest"]
    env = {**os.environ, "DOCKYARD_REDIS_URL": conftest.WORKER_REDIS_URL}
    window = str(int(time.time() - since) + 5)
    listed = subprocess.run([sys.executable, "-m", "dockyard.workers.cli", "audit", "--since", window, "--json"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    entries = {(each["team"], each["repository"], each["digest"], each["login"]) for each in json.loads(listed.stdout)}
    assert {(conftest.TEAM_A, a_repo, a_digest, "farm"), (conftest.TEAM_B, b_repo, b_digest, "farm")} <= entries
    only_b = subprocess.run([sys.executable, "-m", "dockyard.workers.cli", "audit", "--team", conftest.TEAM_B, "--since", window, "--json"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert {each["team"] for each in json.loads(only_b.stdout)} == {conftest.TEAM_B}
