"""dockyard.tasks.routing.placement: lineages, the preferred host, spill at saturation, least-loaded new lineages (fakeredis)."""

from __future__ import annotations

import random
import time
from typing import Any

import fakeredis
import pytest
import redis

import dockyard.config.settings
import dockyard.tasks.routing.placement
from dockyard.config.settings import Settings, host_queue, team_queue
from dockyard.tasks.routing import placement
from dockyard.tasks.farm.hosts import beat, forget_host
from dockyard.tasks.routing.placement import HostLoad, Lineage, choose, lineage_of_message, placement_queue, record_built
from dockyard.tasks.farm.recovery import inflight_key
from dockyard.tasks.task_names import BUILD_TASK
from dockyard.tasks.routing.router import route_task
from tests.unit.support import make_settings
from tests.probes import builders

SPEC_KEY = "0" * 64


@pytest.fixture
def farm(monkeypatch: pytest.MonkeyPatch, fake_redis: fakeredis.FakeRedis) -> Settings:
    """Placement reads ``get_settings()`` and ``redis_for`` (broker and cache are one Redis here)."""
    settings = make_settings(default_namespace="team")
    monkeypatch.setattr(dockyard.config.settings, "get_settings", lambda: settings)
    monkeypatch.setattr(dockyard.tasks.keyspace, "redis_for", lambda _settings: fake_redis)
    return settings


def live(connection: redis.Redis, settings: Settings, *hosts: str, concurrency: int = 2, pool: str | None = None) -> None:
    for host in hosts:
        beat(connection, settings, host, {"concurrency": concurrency, "build_queue": pool or settings.build_queue})


def running(connection: redis.Redis, settings: Settings, host: str, count: int) -> None:
    for index in range(count):
        connection.hset(inflight_key(settings, host), f"task-{index}:0", str(index + 1))


def queued(connection: redis.Redis, host: str, count: int, team: str = "default") -> None:
    """``count`` messages waiting in ``host``'s queue of ``team``."""
    for index in range(count):
        connection.lpush(team_queue(host_queue(host), team), f"message-{index}")


def spec_message(image_name: str = "team/app", dockerfile: str = "Dockerfile", **fields: Any) -> dict[str, Any]:
    """A build message as dockyard.tasks.client sends it (only the fields placement reads matter here)."""
    return {"spec": {"image_name": image_name, "tag": "v1", "dockerfile": dockerfile, "build_backend": "docker-py",
                     "build_kwargs": {}, "key": SPEC_KEY, **fields}}


def lineage(image_name: str = "team/app", dockerfile: str = "Dockerfile") -> Lineage:
    found = lineage_of_message([], spec_message(image_name, dockerfile), make_settings())
    assert found is not None
    return found


# lineage ids


def test_builds_of_one_project_share_a_lineage_whatever_their_tag_or_content() -> None:
    settings = make_settings()
    one = lineage_of_message([], spec_message(tag="v1", context_digest="sha256:" + "1" * 64), settings)
    two = lineage_of_message([], spec_message(tag="v2", context_digest="sha256:" + "2" * 64), settings)
    assert one == two and one is not None and one.id == two.id  # type: ignore[union-attr]
    assert one.name == "team/app (Dockerfile)"


def test_repository_dockerfile_backend_and_platform_each_make_another_lineage() -> None:
    settings = make_settings()
    base = lineage_of_message([], spec_message(), settings)
    others = [
        lineage_of_message([], spec_message(image_name="team/other"), settings),
        lineage_of_message([], spec_message(dockerfile="docker/prod.Dockerfile"), settings),
        lineage_of_message([], spec_message(build_backend="buildx"), settings),
        lineage_of_message([], spec_message(build_backend="buildx", build_kwargs={"platforms": ["linux/arm64"]}), settings),
    ]
    ids = {each.id for each in [base, *others] if each is not None}
    assert len(ids) == 5
    assert others[3] is not None and others[3].name == "team/app (Dockerfile, buildx, linux/arm64)"


def test_a_message_sent_by_name_has_the_lineage_of_the_spec_the_worker_makes_of_it() -> None:
    settings = make_settings(default_namespace="team")
    by_name = lineage_of_message([], {"image_name": "app", "tag": "v1", "path": "/ctx"}, settings)
    assert by_name == lineage_of_message([], spec_message("team/app"), settings)


@pytest.mark.parametrize("args, kwargs", [
    ([], {"spec": "not a mapping"}),
    ([], {"spec": {"dockerfile": "Dockerfile"}}),  # no image name
    ([], {"image_name": "Bad Name"}),
    ([{"image_name": "team/app"}], {}),  # positional arguments: not a message dockyard sends
    ([], {"spec": {"image_name": "team/app", "build_kwargs": {"platforms": "linux/amd64"}}}),
])
def test_an_odd_message_has_no_lineage(args: list[Any], kwargs: dict[str, Any]) -> None:
    assert lineage_of_message(args, kwargs, make_settings()) is None


# choosing a host (pure)


def loads(*each: HostLoad) -> dict[str, HostLoad]:
    return {load.host: load for load in each}


def test_the_live_host_that_built_the_lineage_last_is_preferred() -> None:
    decision = choose({"h1": 10.0, "h2": 20.0}, loads(HostLoad("h1", 2), HostLoad("h2", 2, running=1)))
    assert (decision.host, decision.reason) == ("h2", "preferred")


def test_a_saturated_preferred_host_spills_to_the_shared_queue() -> None:
    for busy in (HostLoad("h2", 2, running=2), HostLoad("h2", 2, running=1, queued=1), HostLoad("h2", 2, sent=2)):
        decision = choose({"h2": 20.0}, loads(HostLoad("h1", 2), busy))
        assert (decision.host, decision.reason, decision.preferred) == (None, "spill", "h2")


def test_a_new_lineage_goes_to_the_least_loaded_host_relative_to_its_concurrency() -> None:
    decision = choose({}, loads(HostLoad("h1", 2, running=1), HostLoad("h2", 4, running=1), HostLoad("h3", 2, queued=1)))
    assert (decision.host, decision.reason) == ("h2", "least-loaded")


def test_ties_between_least_loaded_hosts_are_broken_at_random() -> None:
    idle = loads(HostLoad("h1", 2), HostLoad("h2", 2), HostLoad("h3", 2))
    picked = {choose({}, idle, rng=random.Random(seed)).host for seed in range(40)}
    assert picked == {"h1", "h2", "h3"}


def test_with_every_host_saturated_a_new_lineage_takes_the_shared_queue() -> None:
    decision = choose({}, loads(HostLoad("h1", 2, running=2), HostLoad("h2", 1, queued=1)))
    assert (decision.host, decision.reason) == (None, "busy")
    assert choose({}, {}).reason == "no-host"


def test_a_dead_preferred_host_gives_way_to_the_previous_live_builder() -> None:
    decision = choose({"h1": 10.0, "gone": 30.0}, loads(HostLoad("h1", 2), HostLoad("h2", 2)))
    assert (decision.host, decision.reason) == ("h1", "preferred")


# placement against Redis


def test_a_build_goes_to_the_queue_of_the_host_that_built_its_lineage(
    farm: Settings, fake_redis: fakeredis.FakeRedis
) -> None:
    live(fake_redis, farm, "h1", "h2", "h3")
    record_built(fake_redis, farm, lineage(), "h2")
    running(fake_redis, farm, "h2", 1)  # busier than the others, not saturated
    assert placement_queue([], spec_message()) == host_queue("h2")
    fake_redis.delete(placement.placed_key("h2"))  # that build went elsewhere after all
    assert route_task(BUILD_TASK, [], spec_message(), {}) == {"queue": team_queue(host_queue("h2"), "default")}, "the router asks placement"


def test_a_saturated_preferred_host_spills_and_its_sends_count_until_the_broker_shows_them(
    farm: Settings, fake_redis: fakeredis.FakeRedis
) -> None:
    live(fake_redis, farm, "h1", "h2")
    record_built(fake_redis, farm, lineage(), "h2")
    running(fake_redis, farm, "h2", 1)
    assert placement_queue([], spec_message()) == host_queue("h2"), "one slot free"
    assert placement_queue([], spec_message()) is None, "the build just routed there fills it: spill"
    fake_redis.delete(placement.placed_key("h2"))
    queued(fake_redis, "h2", 1)  # the routed build, now in h2's queue
    assert placement_queue([], spec_message()) is None
    assert route_task(BUILD_TASK, [], spec_message(), {}) is None


def test_a_new_lineage_goes_to_the_least_loaded_live_host(farm: Settings, fake_redis: fakeredis.FakeRedis) -> None:
    live(fake_redis, farm, "h1", "h2", "h3")
    running(fake_redis, farm, "h1", 1)
    queued(fake_redis, "h3", 1)
    assert placement_queue([], spec_message("team/new")) == host_queue("h2")


def test_a_burst_of_new_lineages_fills_each_host_once_then_takes_the_shared_queue(
    farm: Settings, fake_redis: fakeredis.FakeRedis
) -> None:
    live(fake_redis, farm, "h1", "h2", "h3", concurrency=1)
    queues = [placement_queue([], spec_message(f"team/app{n}")) for n in range(6)]
    assert sorted(queue for queue in queues if queue) == [host_queue(h) for h in ("h1", "h2", "h3")]
    assert queues[3:] == [None, None, None]


def test_a_dead_preferred_host_is_not_preferred(farm: Settings, fake_redis: fakeredis.FakeRedis) -> None:
    live(fake_redis, farm, "h1", "h2", "h3")
    record_built(fake_redis, farm, lineage(), "h2")
    running(fake_redis, farm, "h1", 1)
    running(fake_redis, farm, "h3", 1)
    forget_host(fake_redis, farm, "h2")  # its heartbeat expired
    assert placement_queue([], spec_message()) in {host_queue("h1"), host_queue("h3")}
    fake_redis.delete(placement.placed_key("h1"), placement.placed_key("h3"))
    record_built(fake_redis, farm, lineage(), "h3", at=1.0)  # an older build of it, on a live host
    assert placement_queue([], spec_message()) == host_queue("h3")


def test_a_dead_preferred_host_sends_a_build_to_the_least_loaded_live_host(
    farm: Settings, fake_redis: fakeredis.FakeRedis
) -> None:
    live(fake_redis, farm, "h1", "h2", "h3")
    record_built(fake_redis, farm, lineage(), "h2")
    running(fake_redis, farm, "h1", 1)
    forget_host(fake_redis, farm, "h2")
    assert placement_queue([], spec_message()) == host_queue("h3")


def test_hosts_of_another_pool_are_never_chosen(farm: Settings, fake_redis: fakeredis.FakeRedis) -> None:
    live(fake_redis, farm, "other", pool="another.build.queue")
    record_built(fake_redis, farm, lineage(), "other")
    assert placement_queue([], spec_message()) is None
    live(fake_redis, farm, "mine")
    assert placement_queue([], spec_message()) == host_queue("mine")


def test_the_record_survives_its_host_leaving_and_coming_back(farm: Settings, fake_redis: fakeredis.FakeRedis) -> None:
    live(fake_redis, farm, "h1", "h2")
    record_built(fake_redis, farm, lineage(), "h2")
    forget_host(fake_redis, farm, "h2")
    live(fake_redis, farm, "h3")  # another host joins meanwhile
    running(fake_redis, farm, "h1", 1)
    running(fake_redis, farm, "h3", 1)
    live(fake_redis, farm, "h2")  # back, its engine's layers with it
    assert placement_queue([], spec_message()) == host_queue("h2")


def test_placement_off_or_redis_away_sends_to_the_shared_queue(
    farm: Settings, fake_redis: fakeredis.FakeRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    live(fake_redis, farm, "h1")
    record_built(fake_redis, farm, lineage(), "h1")
    off = farm.model_copy(update={"placement": False})
    monkeypatch.setattr(dockyard.config.settings, "get_settings", lambda: off)
    assert placement_queue([], spec_message()) is None
    monkeypatch.setattr(dockyard.config.settings, "get_settings", lambda: farm)
    monkeypatch.setattr(dockyard.tasks.keyspace, "redis_for", lambda _settings: redis.Redis.from_url("redis://127.0.0.1:1/0"))
    assert placement_queue([], spec_message()) is None


def test_each_host_lists_the_lineages_it_built_most_recent_first(farm: Settings, fake_redis: fakeredis.FakeRedis) -> None:
    record_built(fake_redis, farm, lineage("team/a"), "h1", at=1.0)
    record_built(fake_redis, farm, lineage("team/b"), "h1", at=2.0)
    record_built(fake_redis, farm, lineage("team/a"), "h2", at=3.0)
    assert placement.held_lineages(fake_redis, farm, "h1") == ["team/b (Dockerfile)", "team/a (Dockerfile)"]
    assert placement.held_lineages(fake_redis, farm, "h2") == ["team/a (Dockerfile)"]
    assert builders(fake_redis, farm, lineage("team/a")) == {"h1": 1.0, "h2": 3.0}
    assert fake_redis.ttl(placement.lineage_key(farm, lineage("team/a"))) > 0


def test_a_routed_build_counts_once_its_message_is_published(farm: Settings, fake_redis: fakeredis.FakeRedis) -> None:
    """Successive builds of one lineage, each sent when the last is answered (its task still ending
    on the host), all go to the preferred host: a published message counts by its queue, not twice."""
    from celery.signals import after_task_publish

    live(fake_redis, farm, "h1", "h2")
    record_built(fake_redis, farm, lineage(), "h2")
    running(fake_redis, farm, "h2", 1)  # the last build's task, finishing
    assert placement_queue([], spec_message()) == host_queue("h2")
    assert fake_redis.zcard(placement.placed_key("h2")) == 1, "counted until published"
    after_task_publish.send(sender=BUILD_TASK)
    assert fake_redis.zcard(placement.placed_key("h2")) == 0
    assert placement_queue([], spec_message()) == host_queue("h2")


def test_a_hosts_queued_builds_are_counted_in_the_queue_of_every_team_it_serves(
    farm: Settings, fake_redis: fakeredis.FakeRedis
) -> None:
    beat(fake_redis, farm, "h1", {"concurrency": 4, "build_queue": farm.build_queue, "teams": ["team-a", "team-b"]})
    queued(fake_redis, "h1", 1, team="team-a")
    queued(fake_redis, "h1", 2, team="team-b")
    queued(fake_redis, "h1", 5, team="team-c")  # a queue h1 does not consume
    loads = placement.pool_loads(fake_redis, fake_redis, farm, ["h1"], now=time.time())
    assert loads["h1"].queued == 3


def test_a_host_record_naming_no_teams_counts_the_callers_own_team_queue(
    farm: Settings, fake_redis: fakeredis.FakeRedis
) -> None:
    live(fake_redis, farm, "h1")  # an older worker's record: no "teams"
    queued(fake_redis, "h1", 1)
    queued(fake_redis, "h1", 4, team="team-b")
    loads = placement.pool_loads(fake_redis, fake_redis, farm, ["h1"], now=time.time())
    assert loads["h1"].queued == 1
    theirs = farm.model_copy(update={"team": "team-b"})
    assert placement.pool_loads(fake_redis, fake_redis, theirs, ["h1"], now=time.time())["h1"].queued == 4
