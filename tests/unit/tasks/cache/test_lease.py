"""dockyard.tasks.cache.lease: exclusive acquire, owner-only renew and release, expiry, KeepAlive (fakeredis)."""

from __future__ import annotations

import time

import fakeredis
import redis

from dockyard.tasks.cache.lease import KeepAlive, Lease
from tests.unit.support import Clock

NAME = "unit:lease:k"


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


def test_keepalive_holds_the_lease_past_its_duration(fake_redis: fakeredis.FakeRedis) -> None:
    lease = Lease(fake_redis, NAME, lease_s=0.3)  # renewed every 0.1 s
    lease.acquire()
    with KeepAlive(lease) as keeper:
        time.sleep(0.6)
        assert fake_redis.get(NAME) == lease.token.encode()
    assert not keeper.lost.is_set()


def test_keepalive_sets_lost_when_the_lease_is_taken_away(fake_redis: fakeredis.FakeRedis) -> None:
    lease = Lease(fake_redis, NAME, lease_s=0.06)  # renewed every 20 ms
    lease.acquire()
    with KeepAlive(lease) as keeper:
        fake_redis.set(NAME, "someone-else")
        assert keeper.lost.wait(2.0), "a failed renewal is reported"
    assert fake_redis.get(NAME) == b"someone-else", "the new owner's lease is left alone"


def test_keepalive_stops_renewing_on_exit(fake_redis: fakeredis.FakeRedis) -> None:
    lease = Lease(fake_redis, NAME, lease_s=0.06)
    lease.acquire()
    with KeepAlive(lease) as keeper:
        pass
    assert not keeper._thread.is_alive()
    time.sleep(0.15)
    assert not lease.held_by_anyone(), "no renewal after the block: the lease expired"


class _OneBlip(fakeredis.FakeRedis):
    """fakeredis whose first ``eval`` fails as a dropped connection would."""

    failed = False

    def eval(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        if not self.failed:
            self.failed = True
            raise redis.ConnectionError("blip")
        return super().eval(*args, **kwargs)


def test_keepalive_rides_out_a_redis_blip() -> None:
    connection = _OneBlip(server=fakeredis.FakeServer())
    lease = Lease(connection, NAME, lease_s=0.45)  # the failed renewal at 0.15 s, the next at 0.3 s
    lease.acquire()
    with KeepAlive(lease) as keeper:
        time.sleep(0.6)
    assert connection.failed and not keeper.lost.is_set()
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
