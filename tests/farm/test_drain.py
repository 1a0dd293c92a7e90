"""Draining a host on real workers: its running builds finish, it takes no new build, what waits in its
queue moves to a live host, ``dockyard drain`` reports it empty; undrained, it takes work again. A team's
Redis user can neither drain nor undrain.

Every wait is on an event: the build's live output, the host record its heartbeat writes, the
worker's own report of its queues, the length of a queue in Redis.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timezone
from pathlib import Path
from typing import Any

import docker
import pytest
import redis

from dockyard.config.settings import Settings, host_queue
from dockyard.tasks import client
from dockyard.tasks.cache.live_output import StreamReader
from dockyard.tasks.farm import drain
from dockyard.tasks.farm.hosts import host_key
from dockyard.tasks.keyspace import redis_for
from dockyard.tasks.routing.placement import placement_queue
from tests.farm import conftest
from tests.farm.conftest import WORKER_REDIS_URL, WorkerProcess, operator_app
from tests.farm.farm_helpers import team_host_queue, team_shared_queue
from tests.farm.test_cli import dockyard

TIMEOUT_S = 120
SLOW_STEP_S = 20  # the slow step of the test that only waits for the drain to end


def until(what: str, check: Callable[[], Any], timeout_s: float = 60) -> Any:
    """``check()``'s first true value, read again as each event may have happened (a heartbeat, a pop)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def quick_context(root: Path, base_image: str) -> Path:
    root.mkdir(parents=True)
    (root / "Dockerfile").write_text(f"FROM {base_image}\nCOPY app.txt /app.txt\n")
    (root / "app.txt").write_text(f"{uuid.uuid4()}\n")
    return root


def slow_context(root: Path, base_image: str) -> Path:
    """A project whose first step runs SLOW_STEP_S seconds, then its app file (one lineage whatever app.txt holds)."""
    root.mkdir(parents=True)
    (root / "Dockerfile").write_text(
        f"FROM {base_image}\nRUN sleep {SLOW_STEP_S} && echo {uuid.uuid4()} > /deps\nCOPY app.txt /app.txt\n"
    )
    (root / "app.txt").write_text("version 0\n")
    return root


GATE_FILE = "/tmp/dockyard-test-go"  # a gated step goes on once this exists in its container
GATE_MAX_TICKS = 1200  # a gated step never waits more than this many 0.1 s ticks (nothing hangs if the test fails)


class Gate:
    """Gated RUN steps (``step``) wait on the engine until the test opens the gate; once open, every gated
    step running on the engines, now or later, is let go (``docker exec`` creates the gate file in it)."""

    def __init__(self, engines: list[docker.DockerClient]) -> None:
        self.engines, self.marker = engines, f"gate-{uuid.uuid4().hex[:10]}"
        self._open, self._stop = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._release, name="gate", daemon=True)

    def step(self) -> str:
        return (f"RUN n=0; while [ ! -e {GATE_FILE} ] && [ $n -lt {GATE_MAX_TICKS} ]; do sleep 0.1; n=$((n+1)); done;"
                f" echo {self.marker} {uuid.uuid4()} > /deps")

    def open(self) -> None:
        self._open.set()

    def _release(self) -> None:
        while not self._stop.wait(0.2):
            if not self._open.is_set():
                continue
            for engine in self.engines:
                for found in engine.api.containers(filters={"status": "running"}):
                    if self.marker in found.get("Command", ""):
                        try:
                            engine.api.exec_start(engine.api.exec_create(found["Id"], ["touch", GATE_FILE]))
                        except docker.errors.APIError:
                            pass  # the step ended meanwhile

    def __enter__(self) -> Gate:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.open()
        self._stop.set()
        self._thread.join()


def gated_context(root: Path, base_image: str, gate: Gate) -> Path:
    """A project whose first step waits for ``gate``, then its app file (one lineage whatever app.txt holds)."""
    root.mkdir(parents=True)
    (root / "Dockerfile").write_text(f"FROM {base_image}\n{gate.step()}\nCOPY app.txt /app.txt\n")
    (root / "app.txt").write_text("version 0\n")
    return root


def record(redis_client: redis.Redis, settings: Settings, host: str) -> dict[str, Any]:
    raw = redis_client.get(host_key(settings, host))
    return json.loads(raw) if raw else {}


def node_queues(host: str) -> set[str] | None:
    """The queues ``host``'s build worker says it consumes now (remote control, as an operator)."""
    replies = operator_app().control.inspect(timeout=1.0).active_queues() or {}
    for node, queues in replies.items():
        if node.split("@", 1)[0] == host:
            return {queue["name"] for queue in queues}
    return None


def wait_running(settings: Settings, key: str) -> None:
    """Until the build of ``key`` runs its RUN step on the engine (its live output says so)."""
    reader = StreamReader(redis_for(settings), settings, key)
    seen: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        seen += reader.read(block_s=1.0)
        if any("Running in" in line for line in seen):
            return
    raise AssertionError(f"the build {key} never started its RUN step: {seen}")


def operator(*args: str) -> subprocess.Popen[str]:
    """``dockyard ARGS`` as the operator (the worker Redis user), in the background."""
    return subprocess.Popen(
        [sys.executable, "-m", "dockyard.workers.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "DOCKYARD_REDIS_URL": WORKER_REDIS_URL},
    )


@pytest.fixture
def undrained(settings: Settings, redis_client: redis.Redis, farm_workers: list[WorkerProcess]) -> Iterator[None]:
    """Every session host is in service again after the test, whatever happened."""
    yield
    for worker in farm_workers:
        drain.undrain(redis_client, settings, worker.host_id)
    for worker in farm_workers:
        until(f"{worker.host_id} back in service", lambda: record(redis_client, settings, worker.host_id).get(
            "consuming_shared") is True and record(redis_client, settings, worker.host_id).get("drained") is False)


def test_a_host_drained_while_it_builds_finishes_takes_nothing_new_and_is_reported_empty_then_undrained_takes_work(
    tmp_path: Path, repo: str, base_image: str, settings: Settings, redis_client: redis.Redis,
    farm_workers: list[WorkerProcess], undrained: None, engines: list[docker.DockerClient],
) -> None:
    with Gate(engines) as gate:
        drain_while_it_builds(tmp_path, repo, base_image, settings, redis_client, farm_workers, gate)


def drain_while_it_builds(
    tmp_path: Path, repo: str, base_image: str, settings: Settings, redis_client: redis.Redis,
    farm_workers: list[WorkerProcess], gate: Gate,
) -> None:
    drained_worker, other_worker = farm_workers[0], farm_workers[1]
    drained, other = drained_worker.host_id, other_worker.host_id

    # two quick lineages whose layers are on the host to drain (placement prefers it for both)
    kept, back = quick_context(tmp_path / "kept", base_image), quick_context(tmp_path / "back", base_image)
    for name, context in ((f"{repo}-kept", kept), (f"{repo}-back", back)):
        built = client.build_signature(name, path=str(context), tag="v0").set(queue=team_host_queue(drained)).apply_async()
        assert built.get(timeout=TIMEOUT_S)["host"] == drained

    # the host runs two slow builds (both its slots), and one more waits in its own queue
    slow, other_slow = gated_context(tmp_path / "slow", base_image, gate), gated_context(tmp_path / "slow2", base_image, gate)
    signatures = [client.build_signature(repo, path=str(slow), tag="v0"),
                  client.build_signature(f"{repo}-second", path=str(other_slow), tag="v0")]
    running = [each.set(queue=team_host_queue(drained)).apply_async() for each in signatures]
    for each in signatures:
        wait_running(settings, each.kwargs["spec"]["key"])
    waiting = client.build_signature(
        f"{repo}-queued", path=str(quick_context(tmp_path / "queued", base_image)), tag="v0",
    ).set(queue=team_host_queue(drained)).apply_async()
    until("the third build waiting in the host's queue", lambda: redis_client.llen(team_host_queue(drained)) == 1)

    started = time.monotonic()
    draining = operator("drain", drained, "--timeout", "90", "--json")
    try:
        seen = until("the worker to see the drain and stop consuming the shared queues", lambda: (
            (found := record(redis_client, settings, drained)).get("drained") and found.get("consuming_shared") is False
            and isinstance(found.get("drain"), dict)
        ))
        assert seen
        queues = until("the worker's own report of its queues", lambda: node_queues(drained))
        assert team_shared_queue() not in queues and team_host_queue(drained) in queues, queues
        assert not any(each.ready() for each in running), "the drain was seen while both builds ran"
        assert draining.poll() is None, "dockyard drain waits while the host builds"
        gate.open()  # the running builds (and every later gated step) go on

        # a new build of the drained host's slow lineage goes elsewhere
        with ThreadPoolExecutor(1) as pool:
            (slow / "app.txt").write_text("version 1\n")
            later = pool.submit(client.build, repo, path=str(slow), tag="v1", timeout_s=TIMEOUT_S)

            results = [each.get(timeout=TIMEOUT_S) for each in running]
            assert [(each["host"], each["cache"]) for each in results] == [(drained, "built")] * 2, "running builds finish"
            moved = waiting.get(timeout=TIMEOUT_S)
            assert moved["host"] == other, "the build that waited in the drained host's queue was built elsewhere"
            assert f"{waiting.id} goes to" in drained_worker.log(), "the drained host popped it and forwarded it"

            code = draining.wait(timeout=TIMEOUT_S)
            out, err = draining.communicate()
            waited_s = time.monotonic() - started
            assert code == 0, err
            report = json.loads(out)
            assert report["empty"] is True and (report["held"], report["queued"]) == (0, 0), report
            print(f"\ndockyard drain reported {drained} empty after {report['waited_s']} s ({waited_s:.1f} s wall)")

            listed = dockyard("hosts", "--json")
            assert listed.returncode == 0, listed.stderr
            row = next(each for each in json.loads(listed.stdout) if each["host"] == drained)
            assert (row["state"], row["drained"], row["consuming_shared"]) == ("drained", True, False), row
            assert row["heartbeat_age_s"] < settings.heartbeat_ttl_s

            # idle and drained: placement sends its own lineage elsewhere, and it pops nothing of it
            (kept / "app.txt").write_text("kept v1\n")
            signature = client.build_signature(f"{repo}-kept", path=str(kept), tag="v1")
            assert placement_queue([], signature.kwargs) != host_queue(drained)
            elsewhere = signature.apply_async()
            assert elsewhere.get(timeout=TIMEOUT_S)["host"] == other
            assert elsewhere.id not in drained_worker.log(), "placement skipped the drained host: it never saw the build"
            assert later.result(timeout=TIMEOUT_S)["host"] == other, "its slow lineage's new build ran elsewhere"
    finally:
        if draining.poll() is None:
            draining.kill()
            draining.communicate()

    undone = dockyard("undrain", drained)
    assert undone.returncode == 0 and "in service" in undone.stdout, undone.stderr
    until("the worker to consume the shared queues again", lambda: (
        (found := record(redis_client, settings, drained)).get("drained") is False and found.get("consuming_shared") is True
    ))
    until("the worker's report of the shared queue", lambda: team_shared_queue() in (node_queues(drained) or set()))
    (back / "app.txt").write_text("back v1\n")
    again = client.build(f"{repo}-back", path=str(back), tag="v1", timeout_s=TIMEOUT_S)
    assert (again["host"], again["cache"]) == (drained, "built"), "undrained, placement sends it its lineage again"


def test_drain_waits_for_the_build_running_there_even_with_nothing_queued(
    tmp_path: Path, repo: str, base_image: str, settings: Settings, redis_client: redis.Redis,
    farm_workers: list[WorkerProcess], undrained: None,
) -> None:
    host = farm_workers[0].host_id
    signature = client.build_signature(repo, path=str(slow_context(tmp_path / "slow", base_image)), tag="v0")
    running = signature.set(queue=team_host_queue(host)).apply_async()
    wait_running(settings, signature.kwargs["spec"]["key"])
    draining = operator("drain", host, "--timeout", "60", "--json")
    out, err = draining.communicate(timeout=TIMEOUT_S)
    assert draining.returncode == 0, err
    report = json.loads(out)
    assert running.get(timeout=TIMEOUT_S)["host"] == host
    finished = running.date_done  # the result backend's UTC time the build's result was stored
    done_at = (finished if finished.tzinfo else finished.replace(tzinfo=timezone.utc)).timestamp()
    assert report["empty"] is True and report["reported_at"] > done_at, (report, done_at)
    assert "1 running" in err, "it reported the running build while it waited"


@pytest.mark.parametrize("team", ["A", "B"])
def test_a_teams_redis_user_can_neither_drain_nor_undrain(
    team: str, settings: Settings, redis_client: redis.Redis, farm_workers: list[WorkerProcess], undrained: None,
) -> None:
    host = farm_workers[0].host_id
    url = conftest.CALLER_REDIS_URL if team == "A" else conftest.TEAM_B_REDIS_URL
    refused = dockyard("drain", host, "--no-wait", env={"DOCKYARD_REDIS_URL": url})
    assert refused.returncode == 1 and refused.stderr.startswith("dockyard: NoPermissionError: "), refused.stderr
    assert drain.drained(redis_client, settings, host) is None, "not drained"
    with pytest.raises(redis.exceptions.NoPermissionError):
        redis.Redis.from_url(url).set(drain.drain_key(settings, host), "{}")
    assert record(redis_client, settings, host).get("drained") is False

    made = dockyard("drain", host, "--no-wait")
    assert made.returncode == 0, made.stderr
    kept = drain.drained(redis_client, settings, host)
    refused = dockyard("undrain", host, env={"DOCKYARD_REDIS_URL": url})
    assert refused.returncode == 1 and refused.stderr.startswith("dockyard: NoPermissionError: "), refused.stderr
    assert drain.drained(redis_client, settings, host) == kept, "still drained"
    with pytest.raises(redis.exceptions.NoPermissionError):
        redis.Redis.from_url(url).delete(drain.drain_key(settings, host))
