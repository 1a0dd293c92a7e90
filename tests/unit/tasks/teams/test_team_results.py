"""dockyard.tasks.teams.results and keys: each team's results and own keys under its name (no services)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from celery.signals import worker_init

from dockyard.tasks.celery_app import create_celery
from dockyard.tasks.teams import results
from dockyard.tasks.teams.keys import team_key, team_namespace
from tests.unit.support import make_settings


def test_a_teams_keys_are_under_its_namespace() -> None:
    settings = make_settings(team="team-a")
    assert team_key(settings, "out", "k") == "unit:team:team-a:out:k"
    assert team_key(settings, "ctx", "sha256:d", "meta") == "unit:team:team-a:ctx:sha256:d:meta"
    assert team_key(settings, "x").startswith(team_namespace(settings.key_prefix, "team-a"))


def test_a_callers_results_are_read_under_its_own_team(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = make_settings(team="team-a")
    monkeypatch.setattr(results, "get_settings", lambda: settings)
    backend = create_celery(settings).backend
    assert isinstance(backend, results.TeamRedisBackend)
    assert backend.get_key_for_task("abc") == b"celery-task-meta-team-a.abc"
    with pytest.raises(ValueError, match="task_id must not be empty"):
        backend.get_key_for_task("")



@pytest.fixture
def in_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process started a Celery worker (worker_init sets it; undone after the test)."""
    monkeypatch.setitem(results._in_worker, "on", False)
    worker_init.send(sender=None)
    assert results._in_worker["on"], "a worker's start sets it"


def test_a_worker_stores_a_result_under_the_team_of_its_message(monkeypatch: pytest.MonkeyPatch, in_worker: None) -> None:
    backend = create_celery(make_settings(), worker=True).backend
    stored: list[Any] = []
    monkeypatch.setattr(backend, "set", lambda name, value, **_: stored.append(name))
    monkeypatch.setattr(backend, "get", lambda name: None)  # no result stored before
    came_from = SimpleNamespace(delivery_info={"routing_key": "dockyard.host.h1@team-b"}, id="abc", ignore_result=False)
    backend.store_result("abc", {"ok": 1}, "SUCCESS", request=came_from)
    backend.store_result("def", {"ok": 1}, "SUCCESS", request=SimpleNamespace(delivery_info={"routing_key": "dockyard.build"}))
    assert stored == [b"celery-task-meta-team-b.abc", b"celery-task-meta-def"], "a message of no team: no team's key"
    assert backend.get_key_for_task("abc") == b"celery-task-meta-abc", "outside a task a worker names no team"
