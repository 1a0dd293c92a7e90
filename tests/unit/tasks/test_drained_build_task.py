"""dockyard.tasks.celery_tasks on a drained host: a build it pops goes to another host, never built there (fakeredis)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest

import dockyard.tasks.keyspace
from dockyard.config.settings import Settings, host_queue, team_queue
from dockyard.tasks import celery_tasks
from dockyard.tasks.celery_tasks import build_task
from dockyard.tasks.farm import drain
from dockyard.tasks.farm.hosts import beat
from dockyard.tasks.prepare import prepare_build
from tests.unit.fakes import FakeEngine
from tests.unit.support import make_settings


class Replaced(Exception):
    """What ``Task.replace`` raises here: the signature the task was replaced by."""

    def __init__(self, signature: Any) -> None:
        super().__init__("replaced")
        self.signature = signature


@pytest.fixture
def worker(monkeypatch: pytest.MonkeyPatch, fake_redis: fakeredis.FakeRedis) -> Iterator[tuple[Settings, list[Any]]]:
    settings = make_settings(host_id="h1")
    built: list[Any] = []

    def replace(signature: Any) -> Any:
        raise Replaced(signature)

    monkeypatch.setattr(celery_tasks, "get_settings", lambda: settings)
    monkeypatch.setattr(celery_tasks, "redis_for", lambda _settings: fake_redis)
    monkeypatch.setattr(dockyard.tasks.keyspace, "redis_for", lambda _settings: fake_redis)
    monkeypatch.setattr(celery_tasks, "shared_client", lambda _settings: FakeEngine())
    monkeypatch.setattr(celery_tasks, "execute_build", lambda spec, **_: built.append(spec) or {"host": "h1"})
    monkeypatch.setattr(build_task, "replace", replace)
    build_task.push_request(delivery_info={"exchange": "", "routing_key": host_queue("h1") + "@default"}, id="task-1")
    try:
        yield settings, built
    finally:
        build_task.pop_request()


def a_spec(settings: Settings, tmp_path: Path) -> dict[str, Any]:
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    spec, packed = prepare_build({"image_name": "reg.io/team/app", "tag": "v1", "path": str(tmp_path)}, settings)
    packed.close()
    return spec.model_dump()


def test_a_drained_host_forwards_a_build_to_another_live_host(
    worker: tuple[Settings, list[Any]], fake_redis: fakeredis.FakeRedis, tmp_path: Path
) -> None:
    settings, built = worker
    for host in ("h1", "h2"):
        beat(fake_redis, settings, host, {"concurrency": 2, "build_queue": settings.build_queue})
    drain.drain(fake_redis, settings, "h1")
    spec = a_spec(settings, tmp_path)
    with pytest.raises(Replaced) as replaced:
        build_task.run(spec=spec)
    assert built == [], "nothing built on the drained host"
    assert replaced.value.signature.options["queue"] == team_queue(host_queue("h2"), "default")
    assert replaced.value.signature.kwargs == {"spec": spec}, "the same build, as it was sent"


def test_with_no_other_host_in_service_the_build_goes_to_the_shared_queue(
    worker: tuple[Settings, list[Any]], fake_redis: fakeredis.FakeRedis, tmp_path: Path
) -> None:
    settings, built = worker
    drain.drain(fake_redis, settings, "h1")
    with pytest.raises(Replaced) as replaced:
        build_task.run(spec=a_spec(settings, tmp_path))
    assert built == [] and replaced.value.signature.options["queue"] == team_queue(settings.build_queue, "default")


def test_a_host_in_service_builds(worker: tuple[Settings, list[Any]], tmp_path: Path) -> None:
    settings, built = worker
    build_task.run(spec=a_spec(settings, tmp_path))
    assert len(built) == 1
