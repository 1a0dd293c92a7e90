"""tasks.metrics: per-host counters in a Redis hash, rendered for Prometheus (fakeredis)."""

from __future__ import annotations

import fakeredis
import pytest

from config.settings import Settings
from tasks.metrics import COUNTERS, DURATIONS, count, observe, read, render
from tests.unit.support import make_settings


def test_counts_add_up_under_this_host(fake_redis: fakeredis.FakeRedis, unit_settings: Settings) -> None:
    count(fake_redis, unit_settings, "builds_total")
    count(fake_redis, unit_settings, "builds_total", 2)
    assert read(fake_redis, unit_settings, "h1") == {"builds_total": 3.0}
    assert read(fake_redis, unit_settings, "h2") == {}


def test_durations_keep_a_sum_and_a_count(fake_redis: fakeredis.FakeRedis, unit_settings: Settings) -> None:
    observe(fake_redis, unit_settings, "build_seconds", 1.5)
    observe(fake_redis, unit_settings, "build_seconds", 0.25)
    assert read(fake_redis, unit_settings, "h1") == {"build_seconds_sum": 1.75, "build_seconds_count": 2.0}


def test_unknown_names_are_refused(fake_redis: fakeredis.FakeRedis, unit_settings: Settings) -> None:
    with pytest.raises(KeyError):
        count(fake_redis, unit_settings, "typo_total")
    with pytest.raises(KeyError):
        observe(fake_redis, unit_settings, "typo_seconds", 1.0)
    assert fake_redis.keys("*") == []


def test_the_counters_expire_within_a_month(fake_redis: fakeredis.FakeRedis, unit_settings: Settings) -> None:
    count(fake_redis, unit_settings, "pushes_total")
    assert 0 < fake_redis.ttl("unit:metrics:h1") <= 31 * 24 * 3600


def test_render_shows_every_metric_with_zero_for_the_unset(
    fake_redis: fakeredis.FakeRedis, unit_settings: Settings
) -> None:
    count(fake_redis, unit_settings, "cache_hits_total", 5)
    observe(fake_redis, unit_settings, "push_seconds", 2.5)
    text = render(fake_redis, unit_settings, "h1").splitlines()
    assert 'dockyard_cache_hits_total{host="h1"} 5' in text
    assert 'dockyard_builds_total{host="h1"} 0' in text
    assert 'dockyard_push_seconds_sum{host="h1"} 2.5' in text
    assert 'dockyard_push_seconds_count{host="h1"} 1' in text
    assert "# TYPE dockyard_cache_hits_total counter" in text
    assert "# TYPE dockyard_push_seconds summary" in text
    assert len(text) == 3 * len(COUNTERS) + 4 * len(DURATIONS)


def test_render_reads_the_host_asked_for(fake_redis: fakeredis.FakeRedis) -> None:
    count(fake_redis, make_settings(host_id="h2"), "joins_total")
    assert 'dockyard_joins_total{host="h2"} 1' in render(fake_redis, make_settings(host_id="h1"), "h2")


def test_large_values_are_rendered_exactly(fake_redis: fakeredis.FakeRedis, unit_settings: Settings) -> None:
    count(fake_redis, unit_settings, "builds_total", 1234567)
    assert 'dockyard_builds_total{host="h1"} 1234567' in render(fake_redis, unit_settings, "h1").splitlines()
