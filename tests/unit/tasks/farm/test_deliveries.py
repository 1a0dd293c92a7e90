"""dockyard.tasks.farm.deliveries: the per-message delivery count and its cap (fakeredis).

A message whose worker died ``max_redeliveries`` times fails at its next
delivery, as the README's settings table says.
"""

from __future__ import annotations

import fakeredis
import pytest

from dockyard.tasks.farm.deliveries import RedeliveryLimit, count_delivery, forget_deliveries, hand_over_deliveries
from tests.unit.support import make_settings


def test_the_first_max_redeliveries_deliveries_run(fake_redis: fakeredis.FakeRedis) -> None:
    settings = make_settings(max_redeliveries=3)
    assert [count_delivery(fake_redis, settings, "t", 0) for _ in range(3)] == [1, 2, 3]


def test_a_message_whose_worker_died_max_redeliveries_times_fails(fake_redis: fakeredis.FakeRedis) -> None:
    settings = make_settings(max_redeliveries=3)
    for _death in range(3):  # delivered, and the worker died running it
        count_delivery(fake_redis, settings, "t", 0)
    message = r"task t was delivered 4 times; its worker died on each of the first 3 .*MAX_REDELIVERIES=3"
    with pytest.raises(RedeliveryLimit, match=message):
        count_delivery(fake_redis, settings, "t", 0)
    with pytest.raises(RedeliveryLimit, match="delivered 5 times"):
        count_delivery(fake_redis, settings, "t", 0)


def test_with_one_allowed_a_single_death_fails_the_message(fake_redis: fakeredis.FakeRedis) -> None:
    settings = make_settings(max_redeliveries=1)
    assert count_delivery(fake_redis, settings, "t", 0) == 1
    with pytest.raises(RedeliveryLimit):
        count_delivery(fake_redis, settings, "t", 0)


def test_attempts_and_tasks_are_counted_apart(fake_redis: fakeredis.FakeRedis) -> None:
    settings = make_settings(max_redeliveries=1)
    count_delivery(fake_redis, settings, "t", 0)
    assert count_delivery(fake_redis, settings, "t", 1) == 1, "a retry is a new attempt"
    assert count_delivery(fake_redis, settings, "u", 0) == 1


def test_the_counter_outlives_the_redeliveries_and_then_expires(fake_redis: fakeredis.FakeRedis) -> None:
    settings = make_settings(max_redeliveries=3, visibility_timeout_s=100)
    count_delivery(fake_redis, settings, "t", 0)
    assert fake_redis.ttl("unit:deliveries:t:0") == 100 * (3 + 2)


def test_forget_resets_the_count(fake_redis: fakeredis.FakeRedis) -> None:
    settings = make_settings(max_redeliveries=1)
    count_delivery(fake_redis, settings, "t", 0)
    forget_deliveries(fake_redis, settings, "t", 0)
    assert fake_redis.keys("*") == []
    assert count_delivery(fake_redis, settings, "t", 0) == 1


def test_a_takeover_hands_its_deaths_to_the_next_attempt(fake_redis: fakeredis.FakeRedis) -> None:
    """Died, died, then a delivery that waited and handed over: the next attempt has 2 deaths behind it."""
    settings = make_settings(max_redeliveries=3)
    for _ in range(3):
        count_delivery(fake_redis, settings, "t", 0)
    hand_over_deliveries(fake_redis, settings, "t", 0)
    assert fake_redis.get("unit:deliveries:t:0") is None
    assert count_delivery(fake_redis, settings, "t", 1) == 3, "the third delivery of the new attempt"
    with pytest.raises(RedeliveryLimit):
        count_delivery(fake_redis, settings, "t", 1)


def test_a_takeover_with_no_death_starts_the_next_attempt_afresh(fake_redis: fakeredis.FakeRedis) -> None:
    settings = make_settings(max_redeliveries=1)
    count_delivery(fake_redis, settings, "t", 0)
    hand_over_deliveries(fake_redis, settings, "t", 0)
    assert fake_redis.keys("*") == []
