"""Placement on real workers: a lineage's builds land where its layers are, and spill when that host is full.

The slow step's runs are counted from the engines' events (containers made
from the base image: the first step of a real build), not from dockyard.
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import docker
import redis

from dockyard.config.settings import Settings
from dockyard.tasks import client
from dockyard.tasks.routing.placement import lineage_of_message, placement_queue
from dockyard.tasks.farm.recovery import inflight_key
from tests.farm.farm_helpers import team_host_queue
from tests.farm.conftest import WorkerProcess
from tests.farm.farm_helpers import container_creates, image_id_on_any, settle, slow_context
from tests.farm.test_cli import dockyard

TIMEOUT_S = 120
SLOW_STEP_S = 2
LONG_BUILD_S = 10


def project(root: Path, base_image: str) -> Path:
    """A project with a slow dependency step, then its app file."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "Dockerfile").write_text(
        f"FROM {base_image}\nRUN sleep {SLOW_STEP_S} && echo {uuid.uuid4()} > /deps\nCOPY app.txt /app.txt\n"
    )
    (root / "app.txt").write_text("version 0\n")
    return root


def test_successive_builds_of_one_lineage_land_on_one_host_and_run_the_slow_step_once(
    tmp_path: Path, repo: str, base_image: str, engines: list[docker.DockerClient], farm_workers: list[WorkerProcess],
) -> None:
    context = project(tmp_path / "ctx", base_image)
    base_id = image_id_on_any(engines, base_image)
    since = settle()
    placed = []
    for version in range(6):
        (context / "app.txt").write_text(f"version {version}\n")
        result = client.build(repo, path=str(context), tag=f"v{version}", timeout_s=TIMEOUT_S)
        assert result["cache"] == "built"
        placed.append(result["host"])
    slow_runs = container_creates(engines, since, settle(), from_image=base_id)
    assert placed == [placed[0]] * 6, f"hosts of the successive builds: {placed}"
    assert slow_runs == 1, f"the slow step ran {slow_runs} times in 6 builds"

    listed = dockyard("hosts")
    assert listed.returncode == 0, listed.stderr
    rows = {line.split("\t")[0]: line.split("\t") for line in listed.stdout.splitlines()[1:]}
    assert f"{repo} (Dockerfile)" in rows[placed[0]][6].split("; "), "dockyard hosts shows the lineage on its host"


def test_a_saturated_preferred_host_spills_to_the_shared_queue(
    tmp_path: Path, repo: str, base_image: str, settings: Settings, redis_client: redis.Redis,
    farm_workers: list[WorkerProcess],
) -> None:
    context = project(tmp_path / "ctx", base_image)
    holder = client.build(repo, path=str(context), tag="v0", timeout_s=TIMEOUT_S)["host"]
    other = next(each.host_id for each in farm_workers if each.host_id != holder)
    (context / "app.txt").write_text("version 1\n")
    assert client.build(repo, path=str(context), tag="v1", timeout_s=TIMEOUT_S)["host"] == holder, "not yet full"

    # deliveries the holder already records (an earlier test's killed pool processes leave theirs): not these builds
    before = set(redis_client.hkeys(inflight_key(settings, holder)))
    with ThreadPoolExecutor(2) as pool:
        # the holder's two slots taken by long builds of other projects, sent to its own queue
        long_builds = [
            pool.submit(
                lambda n: client.build_signature(f"{repo}-long{n}", path=str(slow_context(tmp_path / f"long{n}", base_image, seconds=LONG_BUILD_S)), tag="x")
                .set(queue=team_host_queue(holder)).apply_async().get(timeout=TIMEOUT_S), n,
            )
            for n in range(2)
        ]
        deadline = time.monotonic() + 30
        while len(set(redis_client.hkeys(inflight_key(settings, holder))) - before) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(set(redis_client.hkeys(inflight_key(settings, holder))) - before) == 2, "the holder runs two builds"

        (context / "app.txt").write_text("version 2\n")
        spec = client.build_signature(repo, path=str(context), tag="v2").kwargs
        assert lineage_of_message([], spec, settings) is not None
        assert placement_queue([], spec) is None, "the holder is saturated: the shared queue"
        started = time.monotonic()
        spilled = client.build(repo, path=str(context), tag="v2", timeout_s=TIMEOUT_S)
        took_s = time.monotonic() - started
        assert not any(each.done() for each in long_builds), "answered while the holder was still busy"
        assert [each.result()["host"] for each in long_builds] == [holder, holder]
    assert spilled["host"] == other and spilled["cache"] == "built", spilled
    assert took_s < LONG_BUILD_S, f"the spilled build waited {took_s:.1f} s"
