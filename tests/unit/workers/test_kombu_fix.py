"""dockyard.workers.kombu_fix: a channel whose broker connection was released fails with a connection error, which
Celery ignores, instead of an AttributeError that kills the worker (no broker needed)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import redis
from kombu.transport.redis import Channel, Transport

from dockyard.workers import kombu_fix


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """kombu's own ``_connparams`` replaced by a recorder, then the fix installed over it."""
    seen: list[Any] = []
    monkeypatch.setattr(Channel, "_connparams", lambda self, asynchronous=False: seen.append(self) or {"host": "h"})
    kombu_fix.install()
    return seen


def test_a_released_connection_is_a_connection_error_celery_ignores(calls: list[Any]) -> None:
    released = SimpleNamespace(connection=SimpleNamespace(client=None))
    with pytest.raises(redis.ConnectionError) as raised:
        Channel._connparams(released)
    assert isinstance(raised.value, Transport.connection_errors) and calls == []


def test_a_live_connection_gets_kombus_parameters(calls: list[Any]) -> None:
    live = SimpleNamespace(connection=SimpleNamespace(client=object()))
    assert Channel._connparams(live) == {"host": "h"} and calls == [live]


def test_installing_twice_wraps_once(calls: list[Any]) -> None:
    kombu_fix.install()
    Channel._connparams(SimpleNamespace(connection=SimpleNamespace(client=object())))
    assert len(calls) == 1


def test_without_the_fix_kombu_fails_with_an_attribute_error() -> None:
    """What the fix is for: kombu's own parameters of a released channel (kombu 5.7)."""
    kombus = getattr(Channel._connparams, "__wrapped__", Channel._connparams)  # installed or not in this process
    with pytest.raises(AttributeError, match="hostname"):
        kombus(SimpleNamespace(connection=SimpleNamespace(client=None)))
