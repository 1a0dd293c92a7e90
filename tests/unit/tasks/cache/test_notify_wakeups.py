"""dockyard.tasks.cache.notify: a Waiter sees every wake-up sent after it was made, even one sent
before ``wait`` is called (issue 19, item 7). On fakeredis."""

from __future__ import annotations

import time

import fakeredis

from dockyard.tasks.cache.notify import Waiter, announce, done_key
from tests.unit.support import make_settings

BLOCK_S = 2.0  # the waits below must return long before this: woken, not timed out


def test_a_wake_up_between_making_the_waiter_and_waiting_is_not_missed(fake_redis: fakeredis.FakeRedis) -> None:
    settings = make_settings()
    waiter = Waiter(fake_redis, settings, "build", "k")
    announce(fake_redis, settings, "build", "k", "stored")  # before wait(): the owner was quicker
    started = time.monotonic()
    found = waiter.wait(BLOCK_S)
    took = time.monotonic() - started
    events = found.get(waiter.name, [])
    assert [fields for _id, fields in events] == [{b"what": b"stored"}], "woken by the wake-up sent before waiting"
    assert took < BLOCK_S / 2, f"returned at once, not after the timeout ({took:.2f} s)"
    assert waiter.last_id == events[-1][0], "the next wait starts after it"


def test_a_waiter_on_a_busy_stream_sees_only_what_came_after_it(fake_redis: fakeredis.FakeRedis) -> None:
    settings = make_settings()
    for what in ("released", "stored"):  # an earlier build's wake-ups
        announce(fake_redis, settings, "build", "k", what)
    waiter = Waiter(fake_redis, settings, "build", "k")
    announce(fake_redis, settings, "build", "k", "answered")
    found = waiter.wait(BLOCK_S)
    assert [fields for _id, fields in found.get(waiter.name, [])] == [{b"what": b"answered"}]
    assert waiter.name == done_key(settings, "build", "k")


def test_with_no_wake_up_the_wait_times_out_empty(fake_redis: fakeredis.FakeRedis) -> None:
    settings = make_settings()
    announce(fake_redis, settings, "build", "k", "stored")
    waiter = Waiter(fake_redis, settings, "build", "k")
    started = time.monotonic()
    assert waiter.wait(0.05) == {}
    assert time.monotonic() - started >= 0.04
