"""dockyard.tasks.cache.lease: exclusive acquire, owner-only renew and release, expiry, KeepAlive (fakeredis)."""

from __future__ import annotations

import threading

import fakeredis
import redis

from dockyard.tasks.cache.lease import KeepAlive, Lease
from tests.unit.support import Clock

NAME = "unit:lease:k"
WAIT_S = 30.0  # a deadline for what must happen, not a delay: generous for a loaded machine


class Counted(Lease):
    """A lease that records each renewal attempt: its answer, or "error"."""

    def __init__(self, connection: fakeredis.FakeRedis, *, lease_s: float) -> None:
        super().__init__(connection, NAME, lease_s=lease_s)
        self.renewals: list[bool | str] = []
        self.changed = threading.Condition()

    def renew(self) -> bool:
        outcome: bool | str = "error"
        try:
            outcome = super().renew()
            return outcome
        finally:
            with self.changed:
                self.renewals.append(outcome)
                self.changed.notify_all()

    def until_renewed(self, count: int) -> bool:
        """True once ``count`` renewals were tried; False at once if one was refused (KeepAlive stops then)."""
        with self.changed:
            self.changed.wait_for(lambda: len(self.renewals) >= count or False in self.renewals, WAIT_S)
            return len(self.renewals) >= count and False not in self.renewals[:count]


RENEWAL_LATENCY_S = 0.001  # in clock time, a renewal lands this long after its wait ends


class Scheduled(threading.Event):
    """A KeepAlive's stop event whose every wait that runs out moves the frozen clock on by that wait
    (and the renewal's latency): the lease's expiry (fakeredis reads ``time.time``) follows KeepAlive's
    own schedule of renewals, not how fast a loaded machine runs them."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        if super().wait(timeout):
            return True
        assert timeout is not None
        self.clock.advance(timeout + RENEWAL_LATENCY_S)
        self.waits.append(timeout)
        return False


def scheduled(lease: Lease, clock: Clock) -> KeepAlive:
    keeper = KeepAlive(lease)
    keeper._stop = Scheduled(clock)  # before its thread starts
    return keeper


def test_acquire_is_exclusive(fake_redis: fakeredis.FakeRedis) -> None:
    first, second = Lease(fake_redis, NAME, lease_s=3), Lease(fake_redis, NAME, lease_s=3)
    assert first.acquire() is True
    assert second.acquire() is False
    assert fake_redis.get(NAME) == first.token.encode()


def test_acquire_sets_the_lease_duration(fake_redis: fakeredis.FakeRedis) -> None:
    Lease(fake_redis, NAME, lease_s=3).acquire()
    assert 2900 < fake_redis.pttl(NAME) <= 3000


def test_an_expired_lease_can_be_taken_and_its_old_owner_cannot_renew(
    fake_redis: fakeredis.FakeRedis, clock: Clock
) -> None:
    old, new = Lease(fake_redis, NAME, lease_s=3), Lease(fake_redis, NAME, lease_s=3)
    old.acquire()
    clock.advance(3.1)
    assert old.held_by_anyone() is False
    assert new.acquire() is True
    assert old.renew() is False
    assert fake_redis.get(NAME) == new.token.encode()


def test_owner_renewal_restores_the_full_duration(fake_redis: fakeredis.FakeRedis, clock: Clock) -> None:
    lease = Lease(fake_redis, NAME, lease_s=3)
    lease.acquire()
    clock.advance(2)
    assert lease.renew() is True
    assert fake_redis.pttl(NAME) == 3000
    clock.advance(2)
    assert lease.held_by_anyone(), "renewed: still held past the first expiry"


def test_renew_by_a_non_owner_does_nothing(fake_redis: fakeredis.FakeRedis, clock: Clock) -> None:
    owner, other = Lease(fake_redis, NAME, lease_s=3), Lease(fake_redis, NAME, lease_s=3)
    owner.acquire()
    clock.advance(2)
    assert other.renew() is False
    assert fake_redis.pttl(NAME) == 1000, "the owner's expiry is unchanged"
    assert fake_redis.get(NAME) == owner.token.encode()


def test_release_by_a_non_owner_does_nothing(fake_redis: fakeredis.FakeRedis) -> None:
    owner, other = Lease(fake_redis, NAME, lease_s=3), Lease(fake_redis, NAME, lease_s=3)
    owner.acquire()
    assert other.release() is False
    assert fake_redis.get(NAME) == owner.token.encode()


def test_release_by_the_owner_frees_the_lease_once(fake_redis: fakeredis.FakeRedis) -> None:
    owner, next_owner = Lease(fake_redis, NAME, lease_s=3), Lease(fake_redis, NAME, lease_s=3)
    owner.acquire()
    assert owner.release() is True
    assert owner.release() is False
    assert next_owner.acquire() is True


def test_release_after_expiry_leaves_the_next_owners_lease(fake_redis: fakeredis.FakeRedis, clock: Clock) -> None:
    old, new = Lease(fake_redis, NAME, lease_s=3), Lease(fake_redis, NAME, lease_s=3)
    old.acquire()
    clock.advance(4)
    new.acquire()
    assert old.release() is False
    assert fake_redis.get(NAME) == new.token.encode()


def test_keepalive_holds_the_lease_past_its_duration(fake_redis: fakeredis.FakeRedis, clock: Clock) -> None:
    lease = Counted(fake_redis, lease_s=0.03)  # renewed every 10 ms
    lease.acquire()
    started = clock.now
    keeper = scheduled(lease, clock)
    with keeper:
        assert lease.until_renewed(12)  # four lease durations of its schedule
    assert clock.now - started > 3 * 0.03, "more than three lease durations passed"
    assert set(lease.renewals) == {True} and not keeper.lost.is_set()
    assert fake_redis.get(NAME) == lease.token.encode()
    assert 0 < fake_redis.pttl(NAME) <= 30


def test_keepalive_sets_lost_when_the_lease_is_taken_away(fake_redis: fakeredis.FakeRedis) -> None:
    lease = Lease(fake_redis, NAME, lease_s=0.06)  # renewed every 20 ms
    lease.acquire()
    with KeepAlive(lease) as keeper:
        fake_redis.set(NAME, "someone-else")
        assert keeper.lost.wait(WAIT_S), "a failed renewal is reported"
    assert fake_redis.get(NAME) == b"someone-else", "the new owner's lease is left alone"


def test_keepalive_stops_renewing_on_exit(fake_redis: fakeredis.FakeRedis, clock: Clock) -> None:
    lease = Counted(fake_redis, lease_s=0.03)  # renewed every 10 ms
    lease.acquire()
    keeper = scheduled(lease, clock)
    with keeper:
        assert lease.until_renewed(1), "it renews while the block runs"
    assert not keeper._thread.is_alive(), "the renewing thread has ended with the block"
    renewed = len(lease.renewals)
    clock.advance(0.031)
    assert not lease.held_by_anyone(), "no renewal after the block: the lease expired"
    assert len(lease.renewals) == renewed


class _OneBlip(fakeredis.FakeRedis):
    """fakeredis whose first ``eval`` fails as a dropped connection would."""

    failed = False

    def eval(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        if not self.failed:
            self.failed = True
            raise redis.ConnectionError("blip")
        return super().eval(*args, **kwargs)


def test_keepalive_rides_out_a_redis_blip(clock: Clock) -> None:
    connection = _OneBlip(server=fakeredis.FakeServer())
    lease = Counted(connection, lease_s=0.03)  # the failed renewal at +0.011 s, the next at +0.022 s, before expiry
    lease.acquire()
    keeper = scheduled(lease, clock)
    with keeper:
        assert lease.until_renewed(4)
    assert connection.failed and lease.renewals[0] == "error" and set(lease.renewals[1:]) == {True}
    assert not keeper.lost.is_set()
    assert connection.get(NAME) == lease.token.encode()


class Replicated(fakeredis.FakeRedis):
    """fakeredis that records each ``WAIT`` (it has no replicas: one always answers)."""

    waits: list[tuple[int, int]]

    def wait(self, num_replicas: int, timeout: int, **_: object) -> int:
        self.waits.append((num_replicas, timeout))
        return num_replicas


def test_a_lease_behind_sentinel_is_on_a_replica_before_its_owner_starts() -> None:
    connection = Replicated(server=fakeredis.FakeServer())
    connection.waits = []
    first, second = Lease(connection, NAME, lease_s=3, replicas=1), Lease(connection, NAME, lease_s=3, replicas=1)
    assert first.acquire() is True and second.acquire() is False
    assert [count for count, _timeout in connection.waits] == [1]  # only the taken lease waits
    assert Lease(connection, "unit:lease:other", lease_s=3).acquire() and len(connection.waits) == 1  # no replicas asked
