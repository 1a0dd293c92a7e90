"""Cancelling builds on the real farm (issue 21).

A queued build answers ``Cancelled`` without building; a running build
(``RUN sleep 60``, each backend) stops on its engine within 5 s, its caller
gets ``Cancelled``, and nothing is left: no cache entry, lease, failure notice,
pin or private directory. A build a second caller joined goes on for it when
the first cancels. Team B cannot cancel team A's build. The tests wait on the
build's own output lines (it is running), never on sleeps; what runs on the
engine is read from the engines and the machine's processes.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import docker
import pytest
import redis
from celery import Celery
from celery.result import AsyncResult

from dockyard.config.settings import Settings, get_settings
from dockyard.tasks import client
from dockyard.tasks.cache.single_flight import build_cache
from dockyard.tasks.cache.waiters import waiting_key
from dockyard.tasks.celery_app import caller_app, create_celery
from dockyard.tasks.errors import Cancelled
from dockyard.tasks.farm import hosts
from dockyard.tasks.keyspace import key
from dockyard.tasks.prepare import prepare_build
from tests.farm import conftest
from tests.farm.conftest import WorkerProcess, farm_docker_hosts, operator_app
from tests.farm.farm_helpers import container_creates, image_id_on_any

TIMEOUT_S = 120
STOPPED_WITHIN_S = 5.0  # the bound: the engine's build is gone this soon after the cancel
PRIVATE_DIR = re.compile(r"^dockyard-(context|secrets|docker-config)-\d+-")
BACKENDS = ["docker-py", "buildx"]


def sleeper(root: Path, base_image: str, marker: str, *, seconds: int) -> Path:
    """A context whose one step says it started, sleeps, then says it finished (both lines carry ``marker``)."""
    root.mkdir(parents=True)
    (root / "Dockerfile").write_text(
        f"FROM {base_image}\nRUN echo started-{marker} && sleep {seconds} && echo finished-{marker}\n"
    )
    return root


def said(lines: list[str], word: str) -> bool:
    """The build printed ``word`` (its step's output, not the step's own command line)."""
    return any(word in line and "echo" not in line for line in lines)


class BuildCall:
    """``client.build`` in a thread of its own, as a caller makes it: its task id once sent, its lines, its end."""

    def __init__(self, repo: str, context: Path, tag: str, marker: str, **params: Any) -> None:
        self.marker = marker
        self.lines: list[str] = []
        self.started, self.sent, self.done = threading.Event(), threading.Event(), threading.Event()
        self.task_id: str | None = None
        self.result: dict[str, Any] | None = None
        self.error: BaseException | None = None
        self.ended_at = 0.0
        self._thread = threading.Thread(target=self._run, args=(repo, context, tag, params), daemon=True)
        self._thread.start()

    def _run(self, repo: str, context: Path, tag: str, params: dict[str, Any]) -> None:
        try:
            self.result = dict(client.build(
                repo, path=str(context), tag=tag, timeout_s=TIMEOUT_S, on_output=self._line, on_sent=self._sent, **params,
            ))
        except BaseException as exc:  # noqa: BLE001 - the test reads it
            self.error = exc
        finally:
            self.ended_at = time.monotonic()
            self.done.set()

    def _sent(self, task_id: str) -> None:
        self.task_id = task_id
        self.sent.set()

    def _line(self, text: str) -> None:
        self.lines.append(text)
        if said([text], f"started-{self.marker}"):
            self.started.set()

    def wait_started(self) -> None:
        if not self.started.wait(TIMEOUT_S):
            pytest.fail(f"the build never said it started: {self.error!r} {''.join(self.lines)[-2000:]}")
        assert self.task_id is not None, "the call sent a task (it was no hit nor a join)"


def on_engine(engines: list[docker.DockerClient], marker: str) -> list[str]:
    """What of the build still runs: processes of this machine whose command line holds ``marker`` (the
    step's shell, in a container of the classic builder or of the engine's BuildKit), and running
    containers whose command holds it."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and entry.name != str(os.getpid()):
            try:
                line = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if marker in line:
                found.append(f"process {entry.name}: {line[:80]}")
    for engine in engines:
        for container in engine.containers.list():
            if marker in " ".join(container.attrs["Config"].get("Cmd") or []):
                found.append(f"container {container.short_id} on {engine.api.base_url}")
    return found


def gone_after(engines: list[docker.DockerClient], marker: str, since: float, *, within_s: float) -> tuple[float, list[str]]:
    """Seconds from ``since`` until nothing of the build runs on the engines (looked at every 50 ms, up to
    ``within_s`` + 5 s), and what still ran at the last look."""
    deadline = since + within_s + 5
    while True:
        left = on_engine(engines, marker)
        now = time.monotonic()
        if not left or now > deadline:
            return now - since, left
        time.sleep(0.05)


def private_dirs() -> set[str]:
    """The workers' private directories in the temporary directory (contexts, secrets, Docker configs)."""
    return {entry.name for entry in Path(tempfile.gettempdir()).iterdir() if PRIVATE_DIR.match(entry.name)}


def build_key(repo: str, context: Path, tag: str, settings: Settings, **params: Any) -> str:
    spec, packed = prepare_build({"image_name": repo, "path": str(context), "tag": tag, **params}, settings)
    packed.close()
    found = client.caller_cache_key(spec, settings)
    assert found is not None, "the caller resolves the base"
    return found


def assert_nothing_left(redis_client: redis.Redis, settings: Settings, cache_key: str, dirs_before: set[str]) -> None:
    """No cache entry, lease or failure notice of the key, no pin of any image, no new private directory."""
    assert build_cache(redis_client, settings).peek(cache_key) is None, "nothing is cached from a cancelled build"
    assert not redis_client.exists(key(settings, "lease", cache_key)), "its lease is released"
    assert not redis_client.exists(key(settings, "failed", cache_key)), "a cancel is no failure for joiners"
    pins = sorted(name.decode() for name in redis_client.scan_iter(match=f"{settings.key_prefix}pins:*"))
    assert pins == [], "its pins are released"
    assert private_dirs() - dirs_before == set(), "its private directories are removed"


def task_answer(task_id: str) -> AsyncResult:
    return AsyncResult(task_id, app=caller_app())


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``dockyard ARGS`` as a caller of the session's team A (this process's environment), or ``env``."""
    return subprocess.run(
        [sys.executable, "-m", "dockyard.workers.cli", *args], capture_output=True, text=True, timeout=TIMEOUT_S,
        env=env or dict(os.environ), cwd=Path(__file__).parents[2],
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_running_build_stops_on_the_engine_within_5_s_and_leaves_nothing(
    backend: str, tmp_path: Path, repo: str, base_image: str, engines: list[docker.DockerClient],
    redis_client: redis.Redis, settings: Settings, farm_workers: list[WorkerProcess],
) -> None:
    marker = uuid.uuid4().hex[:10]
    context = sleeper(tmp_path / "ctx", base_image, marker, seconds=60)
    dirs_before = private_dirs()
    call = BuildCall(repo, context, "running", marker, build_backend=backend)
    call.wait_started()
    assert on_engine(engines, marker), "the step runs on an engine"
    cancelled_at = time.monotonic()
    client.cancel(call.task_id)  # type: ignore[arg-type]
    assert call.done.wait(30), "the caller is answered"
    assert isinstance(call.error, Cancelled), call.error
    stopped_s, left = gone_after(engines, marker, cancelled_at, within_s=STOPPED_WITHIN_S)
    print(f"{backend}: caller raised Cancelled {call.ended_at - cancelled_at:.2f} s after the cancel; "
          f"nothing of the build ran on the engine {stopped_s:.2f} s after it")
    assert not left and stopped_s < STOPPED_WITHIN_S, left
    with pytest.raises(Cancelled, match="stopped on the engine"):
        task_answer(call.task_id).get(timeout=30)  # type: ignore[arg-type]  # the worker's own answer
    assert not said(call.lines, f"finished-{marker}"), "no more output"
    assert_nothing_left(redis_client, settings, build_key(repo, context, "running", settings, build_backend=backend), dirs_before)


def test_a_queued_build_answers_cancelled_without_building(
    tmp_path: Path, repo: str, base_image: str, engines: list[docker.DockerClient], redis_client: redis.Redis,
    settings: Settings, placement_off: None,
) -> None:
    """Sent to a queue no worker reads yet, cancelled with ``dockyard cancel``, then popped by a new worker."""
    host_id = f"test-cancel-{uuid.uuid4().hex[:6]}"
    queue = f"dockyard-test.{host_id}"
    app: Celery = create_celery(settings.model_copy(update={"build_queue": queue}))
    marker = uuid.uuid4().hex[:10]
    context = sleeper(tmp_path / "ctx", base_image, marker, seconds=60)
    sent = client.build_signature(repo, path=str(context), tag="queued", app=app).apply_async()
    cancelled = cli("cancel", sent.id)
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout.strip() == f"cancel requested for task {sent.id} (team {conftest.TEAM_A})"
    dirs_before = private_dirs()
    worker = WorkerProcess(host_id, farm_docker_hosts()[-1], tmp_path / "worker.log", {"DOCKYARD_BUILD_QUEUE": queue})
    since = time.time()
    worker.start()
    try:
        worker.wait_ready(operator_app(), ready=lambda host: hosts.is_alive(redis_client, settings, host))
        with pytest.raises(Cancelled, match="did not start"):
            sent.get(timeout=TIMEOUT_S)
        until = time.time()
        assert container_creates(engines, since, until) == 0, "nothing was built"
        assert_nothing_left(redis_client, settings, build_key(repo, context, "queued", settings), dirs_before)
    finally:
        worker.stop()
        for name in redis_client.scan_iter(match=f"*{host_id}*"):
            redis_client.delete(name)


def test_a_joined_build_goes_on_for_the_second_caller_when_the_first_cancels(
    tmp_path: Path, repo: str, base_image: str, engines: list[docker.DockerClient], redis_client: redis.Redis,
    settings: Settings, farm_workers: list[WorkerProcess],
) -> None:
    marker = uuid.uuid4().hex[:10]
    context = sleeper(tmp_path / "ctx", base_image, marker, seconds=6)
    cache_key = build_key(repo, context, "joined", settings)
    first = BuildCall(repo, context, "joined", marker)
    first.wait_started()
    second = BuildCall(repo, context, "joined", marker)  # a caller joining the running build (no task of its own)
    deadline = time.monotonic() + 30
    while not redis_client.zcard(waiting_key(settings, cache_key)) and time.monotonic() < deadline:
        time.sleep(0.05)  # until the second call's waiting mark is there: it has joined
    assert redis_client.zcard(waiting_key(settings, cache_key)) == 1, "the second call waits for the build"
    cancelled_at = time.monotonic()
    client.cancel(first.task_id)  # type: ignore[arg-type]
    assert first.done.wait(30) and isinstance(first.error, Cancelled), first.error
    print(f"the first caller raised Cancelled {first.ended_at - cancelled_at:.2f} s after its cancel")
    assert not second.done.is_set() and on_engine(engines, marker), "the build goes on for the second caller"
    assert second.done.wait(TIMEOUT_S) and second.error is None, second.error
    assert second.result is not None and second.result["cache"] == "joined", second.result
    assert image_id_on_any(engines, f"{repo}:joined") == second.result["image_id"], "the second caller has the image"
    assert said(second.lines, f"finished-{marker}"), "the build ran to its end"
    with pytest.raises(Cancelled, match="went on"):
        task_answer(first.task_id).get(timeout=30)  # type: ignore[arg-type]
    assert not redis_client.exists(waiting_key(settings, cache_key)), "no waiting mark is left"


def _team_b_env() -> dict[str, str]:
    """A caller process of team B from a clean environment (as ``tests/farm/test_teams.py`` makes one)."""
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), "DOCKYARD_TEAM": conftest.TEAM_B,
           "DOCKYARD_REDIS_URL": conftest.TEAM_B_REDIS_URL, "DOCKYARD_CONTEXT_STORE_URL": conftest.TEAM_B_STORE_URL}
    for line in Path(conftest.TEAM_A_ENV).read_text().splitlines():
        name, _, value = line.partition("=")
        if name in ("DOCKYARD_KEY_PREFIX", "DOCKYARD_REGISTRY_URL", "DOCKYARD_SEAL_PUBLIC_KEY"):
            env[name] = value
    return env


def test_team_b_cannot_cancel_team_as_build(
    tmp_path: Path, repo: str, base_image: str, redis_client: redis.Redis, settings: Settings,
    farm_workers: list[WorkerProcess],
) -> None:
    if conftest.TEAM_A == conftest.TEAM_B:
        pytest.fail("the farm has no admin URL to make the session's teams: run `bash workers/run.sh test`")
    marker = uuid.uuid4().hex[:10]
    context = sleeper(tmp_path / "ctx", base_image, marker, seconds=4)
    call = BuildCall(repo, context, "theirs", marker)
    call.wait_started()
    a_cancel = key(get_settings(), "team", conftest.TEAM_A, "cancel", str(call.task_id))
    b = redis.Redis.from_url(conftest.TEAM_B_REDIS_URL)
    try:
        with pytest.raises(redis.exceptions.NoPermissionError) as refused:
            b.set(a_cancel, "1", ex=60)
        print(f"team B writing team A's cancel key: {refused.value}")
        assert "NOPERM" in str(refused.value) or "no permissions" in str(refused.value)
    finally:
        b.close()
    by_b = cli("cancel", str(call.task_id), env=_team_b_env())  # lands in B's own namespace, never read for A's task
    assert by_b.returncode == 0, by_b.stderr
    assert redis_client.exists(key(settings, "team", conftest.TEAM_B, "cancel", str(call.task_id)))
    assert not redis_client.exists(a_cancel)
    assert call.done.wait(TIMEOUT_S) and call.error is None, call.error
    assert call.result is not None and call.result["cache"] == "built"
    assert said(call.lines, f"finished-{marker}"), "A's build ran to its end"
