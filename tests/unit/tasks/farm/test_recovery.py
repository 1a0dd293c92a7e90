"""dockyard.tasks.farm.recovery: a dead host's deliveries are put back once, its queue moved to the shared one."""

from __future__ import annotations

from pathlib import Path

import fakeredis
import pytest

from dockyard.config.settings import Settings, fast_queue, host_queue, team_queue
from dockyard.tasks.farm import hosts
from dockyard.tasks.farm import lane
from dockyard.tasks.farm import recovery
from tests.unit.support import make_settings, write_teams


class Channel:
    """kombu's Redis channel, as far as recovery uses it: ``qos.restore_by_tag`` and ``client``."""

    def __init__(self, client: fakeredis.FakeRedis) -> None:
        self.client = client
        self.restored: list[str] = []
        self.qos = self

    def restore_by_tag(self, tag: str, leftmost: bool = False) -> None:
        self.restored.append(tag)


@pytest.fixture
def settings() -> Settings:
    return make_settings(host_id="live")


def as_host(settings: Settings, host: str) -> Settings:
    return settings.model_copy(update={"host_id": host})


def of_default(queue: str) -> str:
    """``queue`` of the one team of a farm without a teams file."""
    return team_queue(queue, "default")


def test_a_dead_hosts_deliveries_are_restored_and_its_queue_rerouted(fake_redis: fakeredis.FakeRedis, settings: Settings) -> None:
    dead = as_host(settings, "gone")
    recovery.received(fake_redis, dead, recovery.delivery("t1", 0), "tag-1")
    recovery.received(fake_redis, dead, recovery.delivery("t2", 0), "tag-2")
    recovery.finished(fake_redis, dead, recovery.delivery("t2", 0))
    fake_redis.lpush(of_default(host_queue("gone")), "forwarded-tag-task")
    channel = Channel(fake_redis)
    assert recovery.dead_hosts(fake_redis, settings) == ["gone"]
    done = recovery.recover_dead_hosts(fake_redis, settings, channel)
    assert done == [recovery.Recovered("gone", 1, 1)]
    assert channel.restored == ["tag-1"], "only what it still held"
    assert fake_redis.lrange(of_default(settings.build_queue), 0, -1) == [b"forwarded-tag-task"]
    assert not fake_redis.exists(of_default(host_queue("gone")))
    assert recovery.recover_dead_hosts(fake_redis, settings, channel) == [], "under the lease: once"


def test_a_dead_hosts_queue_goes_to_its_own_shared_queue(fake_redis: fakeredis.FakeRedis, settings: Settings) -> None:
    other_pool = settings.model_copy(update={"host_id": "gone", "build_queue": "pool-b"})
    recovery.received(fake_redis, other_pool, recovery.delivery("t1", 0), "tag-1")
    fake_redis.lpush(of_default(host_queue("gone")), "forwarded")
    recovery.recover_dead_hosts(fake_redis, settings, Channel(fake_redis))
    assert fake_redis.lrange(of_default("pool-b"), 0, -1) == [b"forwarded"]
    assert not fake_redis.exists(of_default(settings.build_queue), "pool-b", settings.build_queue)


def test_a_live_host_is_not_recovered(fake_redis: fakeredis.FakeRedis, settings: Settings) -> None:
    alive = as_host(settings, "busy")
    recovery.received(fake_redis, alive, recovery.delivery("t1", 0), "tag-1")
    hosts.beat(fake_redis, settings, "busy", {})
    assert recovery.dead_hosts(fake_redis, settings) == []


def test_a_restarted_worker_restores_its_previous_run_but_keeps_its_queue(
    fake_redis: fakeredis.FakeRedis, settings: Settings
) -> None:
    recovery.received(fake_redis, settings, recovery.delivery("t1", 0), "tag-1")
    fake_redis.lpush(of_default(host_queue("live")), "mine")
    channel = Channel(fake_redis)
    assert recovery.recover_host(fake_redis, settings, channel, "live", reroute=False) == recovery.Recovered("live", 1, 0)
    assert fake_redis.lrange(of_default(host_queue("live")), 0, -1) == [b"mine"]


def test_a_retry_is_another_delivery(fake_redis: fakeredis.FakeRedis, settings: Settings) -> None:
    recovery.received(fake_redis, settings, recovery.delivery("t1", 0), "first")
    recovery.received(fake_redis, settings, recovery.delivery("t1", 1), "retried")
    recovery.finished(fake_redis, settings, recovery.delivery("t1", 0))
    assert fake_redis.hvals(recovery.inflight_key(settings, "live")) == [b"retried"]


@pytest.fixture
def fast_lane(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process serves a host's fast lane (``dockyard worker --lane fast``)."""
    monkeypatch.setitem(lane._state, "fast", True)


def test_a_dead_hosts_fast_lane_is_recovered_with_it(
    fake_redis: fakeredis.FakeRedis, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead = as_host(settings, "gone")
    recovery.received(fake_redis, dead, recovery.delivery("build", 0), "build-tag")
    monkeypatch.setitem(lane._state, "fast", True)
    recovery.received(fake_redis, dead, recovery.delivery("hit", 0), "fast-tag")
    monkeypatch.setitem(lane._state, "fast", False)
    fake_redis.lpush(of_default(fast_queue("gone")), "queued-hit")
    fake_redis.lpush(of_default(host_queue("gone")), "queued-tag")
    channel = Channel(fake_redis)
    assert recovery.recover_dead_hosts(fake_redis, settings, channel) == [recovery.Recovered("gone", 2, 2)]
    assert sorted(channel.restored) == ["build-tag", "fast-tag"]
    assert sorted(fake_redis.lrange(of_default(settings.build_queue), 0, -1)) == [b"queued-hit", b"queued-tag"]
    assert not fake_redis.exists(of_default(fast_queue("gone")), recovery.inflight_key(settings, "gone", recovery.FAST_LANE))


def test_each_lane_of_a_restarted_host_restores_only_its_own_previous_run(
    fake_redis: fakeredis.FakeRedis, settings: Settings, fast_lane: None
) -> None:
    recovery.received(fake_redis, settings, recovery.delivery("hit", 0), "fast-tag")
    assert fake_redis.hvals(recovery.inflight_key(settings, "live", recovery.FAST_LANE)) == [b"fast-tag"]
    assert not fake_redis.exists(recovery.inflight_key(settings, "live")), "apart from the build worker's"
    channel = Channel(fake_redis)
    recovered = recovery.recover_host(fake_redis, settings, channel, "live", reroute=False, lanes=(recovery.BUILD_LANE,))
    assert recovered == recovery.Recovered("live", 0, 0) and channel.restored == []
    recovered = recovery.recover_host(fake_redis, settings, channel, "live", reroute=False, lanes=(recovery.FAST_LANE,))
    assert recovered == recovery.Recovered("live", 1, 0) and channel.restored == ["fast-tag"]
    recovery.received(fake_redis, settings, recovery.delivery("hit2", 0), "fast-2")
    recovery.finished(fake_redis, settings, recovery.delivery("hit2", 0))
    assert not fake_redis.exists(recovery.inflight_key(settings, "live", recovery.FAST_LANE))


def test_a_host_that_heartbeats_is_known_before_it_receives_anything(
    fake_redis: fakeredis.FakeRedis, settings: Settings
) -> None:
    """Work routed to its queues (a forwarded tag, a hit) is recovered if it dies before taking any."""
    recovery.known(fake_redis, as_host(settings, "quiet"))
    fake_redis.lpush(of_default(fast_queue("quiet")), "routed-hit")
    assert recovery.recover_dead_hosts(fake_redis, settings, Channel(fake_redis)) == [recovery.Recovered("quiet", 0, 1)]
    assert fake_redis.lrange(of_default(settings.build_queue), 0, -1) == [b"routed-hit"]


def test_each_teams_messages_on_a_dead_host_go_to_that_teams_shared_queue(
    fake_redis: fakeredis.FakeRedis, tmp_path: Path
) -> None:
    settings = make_settings(host_id="live", teams_file=write_teams(tmp_path, {"team-a": [], "team-b": []}))
    recovery.known(fake_redis, as_host(settings, "gone"))
    fake_redis.lpush(team_queue(host_queue("gone"), "team-a"), "tag-of-a")
    fake_redis.lpush(team_queue(fast_queue("gone"), "team-b"), "hit-of-b")
    fake_redis.lpush(team_queue(host_queue("gone"), "intruder"), "of-no-team")
    assert recovery.recover_dead_hosts(fake_redis, settings, Channel(fake_redis)) == [recovery.Recovered("gone", 0, 2)]
    assert fake_redis.lrange(team_queue(settings.build_queue, "team-a"), 0, -1) == [b"tag-of-a"]
    assert fake_redis.lrange(team_queue(settings.build_queue, "team-b"), 0, -1) == [b"hit-of-b"]
    assert fake_redis.lrange(team_queue(host_queue("gone"), "intruder"), 0, -1) == [b"of-no-team"], "no declared team's"
    assert not fake_redis.exists(settings.build_queue, team_queue(settings.build_queue, "intruder"))


def test_a_lane_putting_back_its_own_previous_run_keeps_its_host_known(
    fake_redis: fakeredis.FakeRedis, settings: Settings
) -> None:
    """The fast lane starts after its host's first beat: its own recovery, with nothing to put back,
    must not forget the host, or the host killed before its next beat is recovered by nobody."""
    recovery.known(fake_redis, settings)
    channel = Channel(fake_redis)
    assert recovery.recover_host(fake_redis, settings, channel, "live", reroute=False, lanes=(recovery.FAST_LANE,)) == (
        recovery.Recovered("live", 0, 0)
    )
    assert fake_redis.hkeys(recovery.known_hosts_key(settings)) == [b"live"]
