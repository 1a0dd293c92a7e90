"""Fixtures of the unit tests: fakeredis, explicit settings and a fake clock. No farm.

The fixture names differ from ``tests/farm/conftest.py``'s farm fixtures
(``settings``, ``redis_client``, ...), which no unit test uses.
"""

from __future__ import annotations

import time

import fakeredis
import pytest

from dockyard.config.settings import Settings
from dockyard.tasks import keyspace
from dockyard.tasks.registry import manifests as registry
from tests.unit.fakes import FakeEngine, FakeRegistry
from tests.unit.support import Clock, make_settings


@pytest.fixture
def fake_redis() -> fakeredis.FakeRedis:
    """A fakeredis client on a server of its own (Lua scripting included)."""
    return fakeredis.FakeRedis(server=fakeredis.FakeServer())


@pytest.fixture
def fake_store() -> fakeredis.FakeRedis:
    """The context store: a fakeredis server apart from ``fake_redis`` (the broker's and cache's)."""
    return fakeredis.FakeRedis(server=fakeredis.FakeServer())


@pytest.fixture(autouse=True)
def context_store(monkeypatch: pytest.MonkeyPatch, fake_store: fakeredis.FakeRedis) -> fakeredis.FakeRedis:
    """Every unit test's context store is ``fake_store``: none reaches a real one."""
    monkeypatch.setattr(keyspace, "context_store_for", lambda _settings: fake_store)
    return fake_store


@pytest.fixture
def unit_settings() -> Settings:
    return make_settings()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """Freezes ``time.time`` (fakeredis's clock for expiry) until ``clock.advance``."""
    fake = Clock(time.time())
    monkeypatch.setattr(time, "time", fake)
    return fake


@pytest.fixture
def engine() -> FakeEngine:
    """A fake Docker engine client."""
    return FakeEngine()


@pytest.fixture
def fake_registry(engine: FakeEngine, monkeypatch: pytest.MonkeyPatch) -> FakeRegistry:
    """The engine's registry answers dockyard's manifest HEADs (no network)."""
    monkeypatch.setattr(registry, "served_digest", engine.registry.served_digest)
    return engine.registry
