"""Fixtures of the unit tests: fakeredis, explicit settings and a fake clock. No farm.

The fixture names differ from ``tests/conftest.py``'s farm fixtures
(``settings``, ``redis_client``, ...), which no unit test uses.
"""

from __future__ import annotations

import time

import fakeredis
import pytest

from config.settings import Settings
from tasks import registry
from tests.unit.fakes import FakeEngine, FakeRegistry
from tests.unit.support import Clock, make_settings


@pytest.fixture
def fake_redis() -> fakeredis.FakeRedis:
    """A fakeredis client on a server of its own (Lua scripting included)."""
    return fakeredis.FakeRedis(server=fakeredis.FakeServer())


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
