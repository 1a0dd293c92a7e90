"""dockyard.tasks.routing.router with Redis away: a push sent by name still routes (the default queue), as builds do."""

from __future__ import annotations

import logging

import fakeredis
import pytest
import redis

import dockyard.config.settings
import dockyard.tasks.keyspace
from dockyard.config.settings import Settings
from dockyard.tasks.routing.router import route_task
from dockyard.tasks.task_names import PUSH_TASK
from tests.unit.support import make_settings

LONE_PUSH = {"image_name": "team/app", "tag": "v1"}


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> Settings:
    settings = make_settings(default_namespace="team")
    monkeypatch.setattr(dockyard.config.settings, "get_settings", lambda: settings)
    return settings


def test_a_lone_push_takes_the_default_when_redis_cannot_be_reached(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def unreachable(_settings: Settings) -> redis.Redis:
        raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused.")

    monkeypatch.setattr(dockyard.tasks.keyspace, "redis_for", unreachable)
    with caplog.at_level(logging.WARNING, logger="dockyard.router"):
        assert route_task(PUSH_TASK, [], dict(LONE_PUSH), {}) is None
    warned = [record for record in caplog.records if record.levelno == logging.WARNING and record.name == "dockyard.router"]
    assert warned and "team/app:v1" in warned[0].getMessage()


def test_a_lone_push_takes_the_default_when_redis_fails_mid_lookup(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    server = fakeredis.FakeServer()
    server.connected = False  # every command raises redis.ConnectionError
    monkeypatch.setattr(dockyard.tasks.keyspace, "redis_for", lambda _settings: fakeredis.FakeRedis(server=server))
    with caplog.at_level(logging.WARNING, logger="dockyard.router"):
        assert route_task(PUSH_TASK, [], dict(LONE_PUSH), {}) is None
    assert any(record.levelno == logging.WARNING for record in caplog.records if record.name == "dockyard.router")


def test_a_chained_push_still_follows_its_build_result_with_redis_away(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreachable(_settings: Settings) -> redis.Redis:
        raise redis.ConnectionError("down")

    monkeypatch.setattr(dockyard.tasks.keyspace, "redis_for", unreachable)
    build_result = {"image_name": "team/app", "tag": "v1", "host": "h"}
    assert route_task(PUSH_TASK, [build_result], {}, {}) == {"queue": "dockyard.host.h@default"}
