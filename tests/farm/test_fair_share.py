"""Caps between teams on real workers: a capped team never runs more than its cap, and the rest of the farm serves the other team.

Two hosts (two slots each) on a build queue of their own, started with a copy
of the session's teams file that gives team A ``max_running = 2``
(``conftest.teams_file_with``). Team A sends six builds at once; once some
are parked, team B sends one. What runs is read from the engines themselves:
every 100 ms, the running containers of each team's ``RUN`` steps (their
command carries a marker of the team), and the length of A's parked list.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import docker
import pytest
import redis

from dockyard.config.settings import get_settings
from dockyard.tasks import client
from dockyard.tasks.celery_app import caller_app
from dockyard.tasks.farm import hosts
from dockyard.tasks.teams import caps
from dockyard.workers import launcher
from tests.farm import conftest
from tests.farm.conftest import WorkerProcess, farm_docker_hosts, operator_app, teams_file_with

CAP = 2
A_BUILDS = 6
BUILD_S = 3
SAMPLE_EVERY_S = 0.1
WAIT_S = 120


@pytest.fixture(autouse=True)
def two_teams() -> None:
    if conftest.TEAM_A == conftest.TEAM_B:
        pytest.fail("the farm has no admin URL to make the session's teams: run `bash workers/run.sh test`")


def _reset_caches() -> None:
    get_settings.cache_clear()
    caller_app.cache_clear()


@pytest.fixture
def capped_hosts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_client: redis.Redis) -> Iterator[list[WorkerProcess]]:
    """Two workers whose teams file caps team A at ``CAP``, on a build queue of their own; this test's callers send there."""
    run = uuid.uuid4().hex[:6]
    queue = f"dockyard-test.fair-{run}"
    teams_file = teams_file_with(tmp_path / "teams-capped.toml", {conftest.TEAM_A: {"max_running": CAP}})
    monkeypatch.setenv("DOCKYARD_BUILD_QUEUE", queue)
    _reset_caches()
    env = {"DOCKYARD_BUILD_QUEUE": queue, "DOCKYARD_TEAMS_FILE": teams_file}
    workers = [
        WorkerProcess(f"test-fair-{n}-{run}", url, tmp_path / f"host-{n}.log", env)
        for n, url in enumerate(farm_docker_hosts()[:2], start=1)
    ]
    settings = get_settings()
    try:
        with launcher.running(workers, operator_app()):
            wait_until(lambda: all(hosts.is_alive(redis_client, settings, each.host_id) for each in workers), "both hosts heartbeat")
            yield workers
    finally:
        for worker in workers:
            print(f"--- {worker.host_id}\n{worker.log_tail()}")
        _reset_caches()


@contextmanager
def as_team_b(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This process is team B's caller inside the block (B's team and Redis users)."""
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


@dataclass
class Sample:
    a_running: int
    b_running: int
    a_parked: int


@dataclass
class Sampler:
    """Every ``SAMPLE_EVERY_S``: each team's running RUN-step containers on the engines, and A's parked builds."""

    engines: list[docker.DockerClient]
    redis_client: redis.Redis
    markers: tuple[str, str]
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def sample(self) -> Sample:
        commands = [each.get("Command", "") for engine in self.engines for each in engine.api.containers(filters={"status": "running"})]
        a, b = (sum(marker in command for command in commands) for marker in self.markers)
        return Sample(a, b, caps.parked(self.redis_client, get_settings(), conftest.TEAM_A))

    def run(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY_S):
            self.samples.append(self.sample())

    @contextmanager
    def running(self) -> Iterator[Sampler]:
        thread = threading.Thread(target=self.run, name="sampler", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join()


def project(root: Path, base_image: str, marker: str) -> Path:
    """One RUN step whose container's command carries ``marker`` (and a fresh value: a real build)."""
    root.mkdir(parents=True)
    (root / "Dockerfile").write_text(f"FROM {base_image}\nRUN sleep {BUILD_S} && echo {marker}-{uuid.uuid4().hex} > /built\n")
    return root


def wait_until(condition: object, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(SAMPLE_EVERY_S)
    raise AssertionError(f"not within {WAIT_S} s: {what}")


def test_a_capped_team_never_runs_more_than_its_cap_and_the_rest_of_the_farm_serves_the_other_team(
    capped_hosts: list[WorkerProcess], engines: list[docker.DockerClient], redis_client: redis.Redis,
    tmp_path: Path, base_image: str, repo: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    run = uuid.uuid4().hex[:8]
    markers = (f"fair-a-{run}", f"fair-b-{run}")
    sampler = Sampler(engines[:2], redis_client, markers)
    with sampler.running():
        sent = [
            client.build_signature(repo, path=str(project(tmp_path / f"a{n}", base_image, markers[0])), tag=f"a{n}").apply_async()
            for n in range(A_BUILDS)
        ]
        wait_until(lambda: caps.parked(redis_client, get_settings(), conftest.TEAM_A) > 0
                   or any(s.a_running > CAP for s in sampler.samples), "team A has builds parked (or runs past its cap)")
        with as_team_b(monkeypatch):
            b_built = client.build(repo, path=str(project(tmp_path / "b", base_image, markers[1])), tag="b", timeout_s=WAIT_S)
        b_seen_while_a_parked = [s for s in sampler.samples if s.b_running and s.a_parked]
        a_built = [result.get(timeout=WAIT_S) for result in sent]
    assert b_built["cache"] == "built"
    assert [each["cache"] for each in a_built] == ["built"] * A_BUILDS, "no parked build is lost"
    assert len({each["image_id"] for each in a_built}) == A_BUILDS
    most = max(sample.a_running for sample in sampler.samples)
    assert most <= CAP, f"team A ran {most} builds at once (cap {CAP}), samples: {[s.a_running for s in sampler.samples]}"
    assert most == CAP, "the cap was reached (the sampler sees A's builds)"
    assert b_seen_while_a_parked, "B's build ran while A's builds over the cap were parked"
    assert max(s.b_running for s in sampler.samples) == 1
    assert not caps.running(redis_client, get_settings(), conftest.TEAM_A), "every slot was given back"
    assert caps.parked(redis_client, get_settings(), conftest.TEAM_A) == 0
