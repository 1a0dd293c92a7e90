"""dockyard.workers.disk_guard: the disk budget's thread closes every Docker client it lets go (fakeredis, fake clients).

A pass that fails (the engine or Redis away) drops its client and opens a new
one for the next pass; the client dropped is closed, not left to hold its
connection pool for the worker's life. The last one is closed when the thread stops.
"""

from __future__ import annotations

import threading
from typing import Any

import fakeredis
import pytest

from dockyard.config.settings import Settings
from dockyard.workers import disk_guard
from tests.unit.support import make_settings


class Client:
    """A Docker client that records its closing."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


@pytest.fixture
def settings() -> Settings:
    return make_settings(heartbeat_interval_s=0.001, disk_check_interval_s=0.001)


def run_passes(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, fake_redis: fakeredis.FakeRedis, outcomes: list[Exception | None]
) -> list[Client]:
    """Run ``guard_forever`` for one pass per outcome (an exception: that pass fails); the clients it opened."""
    opened: list[Client] = []
    stop = threading.Event()
    pending = list(outcomes)

    def open_client(_settings: Settings) -> Client:
        opened.append(Client(len(opened) + 1))
        return opened[-1]

    def enforce(_connection: Any, _settings: Settings, client: Client) -> None:
        assert client.closed == 0, "a pass never runs on a closed client"
        outcome = pending.pop(0)
        if not pending:
            stop.set()
        if outcome is not None:
            raise outcome

    monkeypatch.setattr(disk_guard, "open_client", open_client)
    monkeypatch.setattr(disk_guard, "enforce", enforce)
    monkeypatch.setattr(disk_guard, "redis_for", lambda _settings: fake_redis)
    thread = threading.Thread(target=disk_guard.guard_forever, args=(settings, stop), daemon=True)
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive(), "the guard stops when told"
    assert pending == []
    return opened


def test_a_failed_pass_closes_the_client_it_drops(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, fake_redis: fakeredis.FakeRedis
) -> None:
    opened = run_passes(monkeypatch, settings, fake_redis, [RuntimeError("engine away"), None])
    assert [client.number for client in opened] == [1, 2], "a new client after the failed pass"
    assert opened[0].closed == 1, "the client dropped after the failed pass was closed"


def test_many_failed_passes_leave_no_client_open(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, fake_redis: fakeredis.FakeRedis
) -> None:
    opened = run_passes(monkeypatch, settings, fake_redis, [ConnectionError("engine away")] * 50 + [None])
    assert len(opened) == 51
    assert all(client.closed == 1 for client in opened), "every client was closed once, the last one at stop"


def test_passes_that_succeed_keep_one_client_and_close_it_at_stop(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, fake_redis: fakeredis.FakeRedis
) -> None:
    opened = run_passes(monkeypatch, settings, fake_redis, [None, None, None])
    assert len(opened) == 1 and opened[0].closed == 1


def test_a_client_that_fails_to_close_does_not_stop_the_guard(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, fake_redis: fakeredis.FakeRedis
) -> None:
    def close(self: Client) -> None:
        self.closed += 1
        raise OSError("socket already gone")

    monkeypatch.setattr(Client, "close", close)
    opened = run_passes(monkeypatch, settings, fake_redis, [RuntimeError("engine away"), None])
    assert len(opened) == 2 and opened[0].closed == 1
