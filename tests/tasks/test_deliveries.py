"""The redelivery cap (fakeredis: counting logic only)."""

from __future__ import annotations

import fakeredis
import pytest

from config.settings import Settings
from tasks.deliveries import RedeliveryLimit, count_delivery, forget_deliveries


def test_a_message_runs_at_most_max_redeliveries_plus_one_times() -> None:
    connection = fakeredis.FakeRedis()
    settings = Settings(max_redeliveries=2)
    assert [count_delivery(connection, settings, "t1", 0) for _ in range(3)] == [1, 2, 3]
    with pytest.raises(RedeliveryLimit, match="delivered 4 times"):
        count_delivery(connection, settings, "t1", 0)
    assert count_delivery(connection, settings, "t1", 1) == 1, "a retry is a new attempt"
    assert connection.ttl(f"{settings.key_prefix}deliveries:t1:0") > 0


def test_forget_removes_the_counter() -> None:
    connection = fakeredis.FakeRedis()
    settings = Settings()
    count_delivery(connection, settings, "t2", 0)
    forget_deliveries(connection, settings, "t2", 0)
    assert connection.keys("*") == []
