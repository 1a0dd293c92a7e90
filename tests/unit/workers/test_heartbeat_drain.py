"""dockyard.workers.heartbeat: a drained worker stops consuming the shared queues, checked each beat,
and its record always ends with the latest drain (fakeredis, a fake consumer and control)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import fakeredis
import pytest

from dockyard.config.settings import Settings
from dockyard.tasks.farm import drain, hosts
from dockyard.workers import heartbeat
from dockyard.workers.heartbeat import SharedQueues, beat_once
from tests.unit.support import make_settings, write_teams


class FakeTaskConsumer:
    def __init__(self, queues: set[str]) -> None:
        self.queues = queues

    def consuming_from(self, queue: str) -> bool:
        return queue in self.queues


class FakeConsumer:
    def __init__(self, queues: set[str]) -> None:
        self.task_consumer: FakeTaskConsumer | None = FakeTaskConsumer(queues)


class FakeControl:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, list[str]]] = []

    def add_consumer(self, queue: str, destination: list[str]) -> None:
        self.sent.append(("add", queue, destination))

    def cancel_consumer(self, queue: str, destination: list[str]) -> None:
        self.sent.append(("cancel", queue, destination))


class FakeApp:
    def __init__(self) -> None:
        self.control = FakeControl()


@pytest.fixture
def two_teams(tmp_path: Path) -> Settings:
    return make_settings(host_id="h1", teams_file=write_teams(tmp_path, {"team-a": [], "team-b": []}))


SHARED = {"dockyard.build@team-a", "dockyard.build@team-b"}


def test_a_drained_worker_cancels_its_shared_consumers_on_its_own_node_only(two_teams: Settings) -> None:
    app, consumer = FakeApp(), FakeConsumer(set(SHARED) | {"dockyard.host.h1@team-a"})
    shared = SharedQueues(two_teams, app, "h1@machine", consumer)
    shared.want(False, "drained")
    assert sorted(app.control.sent) == [("cancel", queue, ["h1@machine"]) for queue in sorted(SHARED)]
    assert shared.consuming(), "the consumer still consumes them until the commands run on its loop"


def test_a_command_that_did_not_take_effect_is_sent_again_at_the_next_beat_and_then_no_more(two_teams: Settings) -> None:
    app, consumer = FakeApp(), FakeConsumer(set(SHARED))
    shared = SharedQueues(two_teams, app, "h1@machine", consumer)
    shared.want(False, "drained")
    shared.want(False, "drained")
    assert len(app.control.sent) == 4, "the consumer still consumed both: both asked again"
    assert consumer.task_consumer is not None
    consumer.task_consumer.queues = {"dockyard.build@team-b"}  # one command ran
    shared.want(False, "drained")
    assert app.control.sent[-1] == ("cancel", "dockyard.build@team-b", ["h1@machine"]) and len(app.control.sent) == 5
    consumer.task_consumer.queues = set()
    shared.want(False, "drained")
    assert len(app.control.sent) == 5 and not shared.consuming()
    shared.want(True, "undrained")
    assert sorted(app.control.sent[5:]) == [("add", queue, ["h1@machine"]) for queue in sorted(SHARED)]


def test_nothing_is_sent_while_the_consumer_restarts(two_teams: Settings) -> None:
    app, consumer = FakeApp(), FakeConsumer(set(SHARED))
    consumer.task_consumer = None
    SharedQueues(two_teams, app, "h1@machine", consumer).want(False, "drained")
    assert app.control.sent == []


def test_without_a_consumer_what_was_last_asked_counts(two_teams: Settings) -> None:
    app = FakeApp()
    shared = SharedQueues(two_teams, app, "h1@machine")
    shared.want(False, "engine down")
    shared.want(False, "engine down")
    assert len(app.control.sent) == 2 and not shared.consuming()


def test_the_record_ends_with_a_drain_written_between_the_beats_read_and_its_write(
    fake_redis: fakeredis.FakeRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(host_id="h1")
    beats: list[dict[str, Any]] = []
    real_beat = hosts.beat

    def racing_beat(connection: Any, settings_: Settings, host_id: str, info: dict[str, Any]) -> None:
        real_beat(connection, settings_, host_id, info)
        beats.append(info)
        if len(beats) == 1:
            drain.drain(fake_redis, settings, "h1")  # the operator, right after this beat read no drain

    monkeypatch.setattr(hosts, "beat", racing_beat)
    monkeypatch.setattr(heartbeat, "host_info", lambda _settings: {"concurrency": 2})
    beat_once(settings, fake_redis, SharedQueues(settings, FakeApp(), "h1@machine", FakeConsumer(set())), None)
    record = json.loads(fake_redis.get(hosts.host_key(settings, "h1")) or "{}")
    assert len(beats) == 2 and record["drained"] is True
    assert record["drain"]["id"] == drain.drained(fake_redis, settings, "h1")["id"]  # type: ignore[index]
    assert record["consuming_shared"] is False and record["held"] == 0
