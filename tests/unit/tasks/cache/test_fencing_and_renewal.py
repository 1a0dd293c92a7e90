"""dockyard.tasks.cache.single_flight: fencing against an owner whose lease expired while another
owner holds it, and the lease renewed for as long as a compute runs (fakeredis; issue 19, items 1 and 2)."""

from __future__ import annotations

import threading
import time
from typing import Any

import fakeredis
import pytest

from dockyard.config.settings import Settings
from dockyard.tasks.cache.notify import Waiter
from dockyard.tasks.cache.single_flight import Outcome, SingleFlight
from tests.unit.support import Clock, make_settings

LEASE_KEY = "unit:lease:k"


# fencing (item 1)


def test_an_owner_whose_lease_expired_writes_nothing_while_the_new_owner_holds_it(
    fake_redis: fakeredis.FakeRedis, clock: Clock
) -> None:
    settings = make_settings(lease_s=3.0)
    flight = SingleFlight(fake_redis, settings, namespace="build")
    first, second = flight.lease("k"), flight.lease("k")
    assert first.acquire()
    clock.advance(3.1)  # the first owner's lease expires (it stalled: no renewal)
    assert second.acquire(), "the new owner takes the expired lease"
    assert fake_redis.get(LEASE_KEY) == second.token.encode(), "and still holds it"

    assert flight.store_as_owner("k", {"image_id": "A"}, first, host="h1", owner="task-A") is None
    assert flight.peek("k") is None, "the late owner wrote nothing under the new owner's lease"

    stored = flight.store_as_owner("k", {"image_id": "B"}, second, host="h1", owner="task-B")
    assert stored is not None and stored.token == second.token
    assert flight.store_as_owner("k", {"image_id": "A"}, first, host="h1", owner="task-A") is None
    entry = flight.peek("k")
    assert entry is not None and entry.value == {"image_id": "B"} and entry.token == second.token, "the new owner's write stands"


def test_an_owner_whose_lease_was_taken_away_writes_nothing(fake_redis: fakeredis.FakeRedis) -> None:
    """The same with the key expired explicitly (no clock): a lease held by another token fences the write."""
    flight = SingleFlight(fake_redis, make_settings(lease_s=3.0), namespace="build")
    first, second = flight.lease("k"), flight.lease("k")
    assert first.acquire()
    fake_redis.pexpire(LEASE_KEY, 1)
    deadline = time.monotonic() + 2
    while fake_redis.exists(LEASE_KEY) and time.monotonic() < deadline:
        time.sleep(0.001)
    assert second.acquire()
    assert flight.store_as_owner("k", {"image_id": "A"}, first, host=None, owner=None) is None
    assert not fake_redis.exists("unit:build:k")
    assert second.release()


# renewal (item 2)


@pytest.fixture
def short_lease() -> Settings:
    return make_settings(lease_s=0.5, wait_wake_s=0.02)


def test_a_compute_longer_than_the_lease_keeps_it_and_its_waiter_joins(
    fake_redis: fakeredis.FakeRedis, short_lease: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The owner computes for several lease durations: its renewals keep the lease, so the
    caller waiting on the same key joins its value instead of taking over and computing again."""
    computing, finish, second_computed = threading.Event(), threading.Event(), threading.Event()
    waiting = threading.Event()
    original_wait = Waiter.wait

    def noting_wait(self: Waiter, block_s: float, **kwargs: Any) -> Any:
        waiting.set()
        return original_wait(self, block_s, **kwargs)

    monkeypatch.setattr(Waiter, "wait", noting_wait)

    def long_compute() -> dict[str, str]:
        computing.set()
        assert finish.wait(5), "the test lets the compute finish"
        return {"image_id": "first"}

    def second_compute() -> dict[str, str]:
        second_computed.set()
        return {"image_id": "second"}

    outcomes: dict[str, Outcome] = {}
    errors: list[BaseException] = []

    def call(name: str, compute: Any) -> None:
        try:
            outcomes[name] = SingleFlight(fake_redis, short_lease, namespace="build").run("k", compute)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    owner = threading.Thread(target=call, args=("owner", long_compute), daemon=True)
    owner.start()
    try:
        assert computing.wait(2), "the owner computes"
        owner_token = fake_redis.get(LEASE_KEY)
        assert owner_token is not None
        acquired_at = time.monotonic()
        waiter = threading.Thread(target=call, args=("waiter", second_compute), daemon=True)
        waiter.start()
        assert waiting.wait(2), "the second caller waits on the key"
        # well past the lease's duration: without renewal the waiter takes over and computes
        assert not second_computed.wait(2.4 * short_lease.lease_s), "the waiter computed: the owner's lease was not renewed"
        assert time.monotonic() - acquired_at > 2 * short_lease.lease_s
        assert fake_redis.get(LEASE_KEY) == owner_token, "the owner still holds its lease"
        assert fake_redis.pttl(LEASE_KEY) > 0
    finally:
        finish.set()
        owner.join(5)
    waiter.join(5)
    assert not errors
    assert outcomes["owner"].source == "built" and outcomes["owner"].value == {"image_id": "first"}
    assert outcomes["waiter"].source == "joined" and outcomes["waiter"].value == {"image_id": "first"}
    assert not outcomes["waiter"].took_over
    assert not second_computed.is_set()
    assert not fake_redis.exists(LEASE_KEY)
