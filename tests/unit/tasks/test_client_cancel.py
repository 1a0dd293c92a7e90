"""The caller's side of a cancel (``dockyard.tasks.client.cancel``): the request in the team's own
namespace, and a waiting call that raises ``Cancelled`` once its task is cancelled."""

from __future__ import annotations

import threading
import time

import fakeredis
import pytest
from celery.result import AsyncResult

from dockyard.tasks import client
from dockyard.tasks.errors import Cancelled
from dockyard.tasks.teams import cancel
from tests.unit.support import make_settings


class Pending:
    """A task that never answers."""

    def __init__(self, task_id: str) -> None:
        self.id = task_id

    def ready(self) -> bool:
        return False


@pytest.fixture
def caller(monkeypatch: pytest.MonkeyPatch, fake_redis: fakeredis.FakeRedis) -> fakeredis.FakeRedis:
    settings = make_settings(team="team-a", wait_wake_s=0.05)
    monkeypatch.setattr(client, "get_settings", lambda: settings)
    monkeypatch.setattr(client, "redis_for", lambda _settings: fake_redis)
    return fake_redis


def test_cancel_writes_the_request_in_the_callers_team_namespace(caller: fakeredis.FakeRedis) -> None:
    assert client.cancel("task-1") == "task-1"
    assert caller.exists("unit:team:team-a:cancel:task-1")
    assert client.cancel(AsyncResult("task-2")) == "task-2", "an AsyncResult names its task"
    assert caller.ttl("unit:team:team-a:cancel:task-2") > 0


def test_a_waiting_call_raises_cancelled_at_its_next_wake_up(caller: fakeredis.FakeRedis) -> None:
    settings = client.get_settings()
    spec = type("Spec", (), {"ignore_cache": True, "image_name": "app", "tag": "t"})()
    threading.Timer(0.1, lambda: cancel.request_cancel(caller, settings, "task-1")).start()
    started = time.monotonic()
    with pytest.raises(Cancelled, match="Task task-1 was cancelled by its team"):
        client.await_build(Pending("task-1"), spec, settings, timeout_s=30)  # type: ignore[arg-type]
    assert time.monotonic() - started < 5, "at its next wake-up, not at the timeout"
