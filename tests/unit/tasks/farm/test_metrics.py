"""Metrics: per-host counters and histograms in Redis (dockyard.tasks.farm.metrics), the collector of /metrics
(dockyard.workers.metrics_collector) and its server (dockyard.workers.metrics_server), on fakeredis.

The exposition is read back with prometheus_client's own parser, as a scraper reads it.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dockyard.config.settings
import fakeredis
import pytest
import redis
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

import dockyard.tasks.routing.placement
from dockyard.config.settings import Settings, fast_queue, host_queue, team_queue
from dockyard.tasks.farm import metrics
from dockyard.tasks.farm.hosts import beat
from dockyard.tasks.farm.metrics import COUNTERS, HISTOGRAMS, count, cumulative_buckets, observe, read
from dockyard.tasks.routing.placement import Lineage, placement_queue, record_built, spills_key
from dockyard.tasks.farm.recovery import inflight_key
from dockyard.workers import metrics_collector
from dockyard.workers.metrics_collector import FarmCollector, queue_keys
from dockyard.workers.metrics_server import farm_registry, serve_metrics
from tests.unit.support import make_settings, write_teams

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape_text(text: str) -> Samples:
    """Every sample of an exposition, by name and sorted labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def collected(settings: Settings, connection: redis.Redis, broker: redis.Redis | None = None) -> Samples:
    return scrape_text(generate_latest(farm_registry(settings, connection, broker)).decode())


def host(name: str = "h1", **labels: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted({"host": name, **labels}.items()))


def types(text: str) -> dict[str, str]:
    return {family.name: family.type for family in text_string_to_metric_families(text)}


# recording


def test_counts_add_up_under_this_host(fake_redis: fakeredis.FakeRedis, unit_settings: Settings) -> None:
    count(fake_redis, unit_settings, "builds_total")
    count(fake_redis, unit_settings, "builds_total", 2)
    assert read(fake_redis, unit_settings, "h1") == {"builds_total": 3.0}
    assert read(fake_redis, unit_settings, "h2") == {}


def test_a_histogram_keeps_cumulative_buckets_a_sum_and_a_count(
    fake_redis: fakeredis.FakeRedis, unit_settings: Settings
) -> None:
    for seconds in (0.3, 3.0, 3.0, 4000.0):  # the last beyond every finite bucket
        observe(fake_redis, unit_settings, "build_seconds", seconds)
    values = read(fake_redis, unit_settings, "h1")
    assert values["build_seconds_sum"] == pytest.approx(4006.3) and values["build_seconds_count"] == 4
    assert values["build_seconds_bucket:0.5"] == 1
    assert values["build_seconds_bucket:2.5"] == 1
    assert values["build_seconds_bucket:5.0"] == 3
    assert values["build_seconds_bucket:3600.0"] == 3
    buckets = cumulative_buckets(values, "build_seconds")
    assert [le for le, _ in buckets] == [metrics.le_label(b) for b in HISTOGRAMS["build_seconds"].buckets] + ["+Inf"]
    assert buckets[-1] == ("+Inf", 4)
    assert [n for _, n in buckets] == sorted(n for _, n in buckets), "cumulative: never decreasing"


def test_a_value_on_a_bound_falls_in_that_bucket(fake_redis: fakeredis.FakeRedis, unit_settings: Settings) -> None:
    observe(fake_redis, unit_settings, "hit_seconds", 0.01)
    values = read(fake_redis, unit_settings, "h1")
    assert "hit_seconds_bucket:0.005" not in values and values["hit_seconds_bucket:0.01"] == 1


def test_observations_from_before_the_buckets_count_in_inf_only(
    fake_redis: fakeredis.FakeRedis, unit_settings: Settings
) -> None:
    """A hash written by the summary of old (``_sum`` and ``_count`` only) still makes a valid histogram."""
    fake_redis.hset("unit:metrics:h1", mapping={"build_seconds_sum": 10.0, "build_seconds_count": 2})
    observe(fake_redis, unit_settings, "build_seconds", 1.0)
    buckets = dict(cumulative_buckets(read(fake_redis, unit_settings, "h1"), "build_seconds"))
    assert buckets["0.5"] == 0 and buckets["1.0"] == 1 and buckets["3600.0"] == 1 and buckets["+Inf"] == 3


def test_unknown_names_are_refused(fake_redis: fakeredis.FakeRedis, unit_settings: Settings) -> None:
    with pytest.raises(KeyError):
        count(fake_redis, unit_settings, "typo_total")
    with pytest.raises(KeyError):
        observe(fake_redis, unit_settings, "typo_seconds", 1.0)
    assert fake_redis.keys("*") == []


def test_counters_and_histograms_expire_within_a_month(fake_redis: fakeredis.FakeRedis) -> None:
    count(fake_redis, make_settings(host_id="h1"), "pushes_total")
    observe(fake_redis, make_settings(host_id="h2"), "push_seconds", 1.0)
    for name in ("unit:metrics:h1", "unit:metrics:h2"):
        assert 0 < fake_redis.ttl(name) <= 31 * 24 * 3600


# the collector


def test_every_counter_and_histogram_is_exposed_with_zero_for_the_unset(
    fake_redis: fakeredis.FakeRedis, unit_settings: Settings
) -> None:
    count(fake_redis, unit_settings, "cache_hits_total", 5)
    observe(fake_redis, unit_settings, "push_seconds", 2.5)
    text = generate_latest(farm_registry(unit_settings, fake_redis, fake_redis)).decode()
    samples = scrape_text(text)
    assert samples[("dockyard_cache_hits_total", host())] == 5
    for name in COUNTERS:
        assert ("dockyard_" + name, host()) in samples, name
        assert f"# TYPE dockyard_{name} counter" in text.splitlines(), "the name dashboards know, _total included"
    for name in HISTOGRAMS:
        assert types(text)["dockyard_" + name] == "histogram"
        assert ("dockyard_" + name + "_bucket", host(le="+Inf")) in samples
    assert samples[("dockyard_push_seconds_sum", host())] == 2.5
    assert samples[("dockyard_push_seconds_count", host())] == 1
    assert samples[("dockyard_push_seconds_bucket", host(le="2.5"))] == 1
    assert samples[("dockyard_push_seconds_bucket", host(le="1.0"))] == 0
    assert samples[("dockyard_build_seconds_count", host())] == 0


def test_the_histograms_read_back_cumulative_with_count_as_inf(
    fake_redis: fakeredis.FakeRedis, unit_settings: Settings
) -> None:
    for seconds in (0.004, 0.02, 0.02, 7.0, 60.0):
        observe(fake_redis, unit_settings, "hit_seconds", seconds)
    samples = collected(unit_settings, fake_redis)
    buckets = [samples[("dockyard_hit_seconds_bucket", host(le=metrics.le_label(b)))]
               for b in (*HISTOGRAMS["hit_seconds"].buckets, float("inf"))]
    assert buckets == [1, 1, 3, 3, 3, 3, 3, 3, 3, 3, 4, 5]  # up to 0.005, 0.01, 0.025 ... 5.0, 10.0, +Inf
    assert samples[("dockyard_hit_seconds_count", host())] == 5
    assert samples[("dockyard_hit_seconds_sum", host())] == pytest.approx(67.044)


def test_a_worker_shows_its_own_hosts_counters(fake_redis: fakeredis.FakeRedis) -> None:
    count(fake_redis, make_settings(host_id="h2"), "joins_total")
    count(fake_redis, make_settings(host_id="h1"), "joins_total", 3)
    samples = collected(make_settings(host_id="h2"), fake_redis)
    assert samples[("dockyard_joins_total", host("h2"))] == 1
    assert ("dockyard_joins_total", host("h1")) not in samples


def test_large_values_read_back_exactly(fake_redis: fakeredis.FakeRedis, unit_settings: Settings) -> None:
    count(fake_redis, unit_settings, "builds_total", 1234567)
    assert collected(unit_settings, fake_redis)[("dockyard_builds_total", host())] == 1234567


def depths(samples: Samples) -> dict[str, float]:
    return {dict(labels)["queue"]: value for (name, labels), value in samples.items() if name == "dockyard_queue_depth"}


def of_default(queue: str) -> str:
    """``queue`` of the one team of a farm without a teams file (messages wait in teams' queues)."""
    return team_queue(queue, "default")


def test_queue_depths_of_the_shared_queue_and_each_live_hosts_queues(
    fake_redis: fakeredis.FakeRedis, unit_settings: Settings
) -> None:
    for name in ("h1", "h2"):
        beat(fake_redis, unit_settings, name, {"build_queue": unit_settings.build_queue})
    beat(fake_redis, unit_settings, "other", {"build_queue": "dockyard.build.gpu"})  # another pool's host
    fake_redis.lpush(of_default(unit_settings.build_queue), "m1", "m2")
    fake_redis.lpush(of_default(unit_settings.build_queue) + "\x06\x163", "m3")  # kombu's list of priority 3
    fake_redis.lpush(of_default(host_queue("h2")), "m4")
    fake_redis.lpush(of_default(fast_queue("h1")), "m5", "m6", "m7")
    fake_redis.lpush(of_default(host_queue("gone")), "m8")  # no heartbeat: not shown
    fake_redis.lpush(host_queue("h1"), "m9")  # a queue of no team: no one sends there
    assert depths(collected(unit_settings, fake_redis, fake_redis)) == {
        unit_settings.build_queue: 3, "dockyard.build.gpu": 0,
        host_queue("h1"): 0, fast_queue("h1"): 3, host_queue("h2"): 1, fast_queue("h2"): 0,
        host_queue("other"): 0, fast_queue("other"): 0,
    }


def test_a_queues_depth_sums_the_queues_of_every_declared_team(
    fake_redis: fakeredis.FakeRedis, tmp_path: Path
) -> None:
    settings = make_settings(teams_file=write_teams(tmp_path, {"team-a": [], "team-b": []}))
    beat(fake_redis, settings, "h1", {"build_queue": settings.build_queue})
    fake_redis.lpush(team_queue(settings.build_queue, "team-a"), "a1", "a2")
    fake_redis.lpush(team_queue(settings.build_queue, "team-b"), "b1")
    fake_redis.lpush(team_queue(host_queue("h1"), "team-b"), "b2")
    fake_redis.lpush(team_queue(host_queue("h1"), "intruder"), "x")  # no declared team's
    assert depths(collected(settings, fake_redis, fake_redis)) == {
        settings.build_queue: 3, host_queue("h1"): 1, fast_queue("h1"): 0,
    }


def test_queue_depths_are_read_in_the_broker_not_the_cache(fake_redis: fakeredis.FakeRedis, unit_settings: Settings) -> None:
    broker = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    beat(fake_redis, unit_settings, "h1", {})
    broker.lpush(of_default(host_queue("h1")), "m1")
    fake_redis.lpush(of_default(host_queue("h1")), "x", "y")  # not the broker's
    assert depths(collected(unit_settings, fake_redis, broker))[host_queue("h1")] == 1
    assert depths(collected(unit_settings, fake_redis, None)) == {}, "no Redis broker: no depths"


def test_queue_keys_follow_the_brokers_key_prefix_and_priority_steps(
    monkeypatch: pytest.MonkeyPatch, unit_settings: Settings
) -> None:
    assert queue_keys(unit_settings, "q") == ["q", "q\x06\x163", "q\x06\x166", "q\x06\x169"], "kombu's defaults"
    monkeypatch.setattr(metrics_collector, "transport_options", lambda _settings, _url: {
        "global_keyprefix": "pre:", "priority_steps": [0, 5], "sep": ":",
    })
    assert queue_keys(unit_settings, "q") == ["pre:q", "pre:q:5"]


def test_lineages_held_by_each_live_host(fake_redis: fakeredis.FakeRedis, unit_settings: Settings) -> None:
    for name in ("h1", "h2"):
        beat(fake_redis, unit_settings, name, {})
    record_built(fake_redis, unit_settings, Lineage("team/a", "Dockerfile"), "h1")
    record_built(fake_redis, unit_settings, Lineage("team/b", "Dockerfile"), "h1")
    record_built(fake_redis, unit_settings, Lineage("team/a", "Dockerfile"), "h1")  # again: still two
    record_built(fake_redis, unit_settings, Lineage("team/c", "Dockerfile"), "h2")
    record_built(fake_redis, unit_settings, Lineage("team/d", "Dockerfile"), "dead")
    samples = collected(unit_settings, fake_redis, fake_redis)
    lineages = {dict(labels)["host"]: value for (name, labels), value in samples.items()
                if name == "dockyard_placement_lineages"}
    assert lineages == {"h1": 2, "h2": 1}


def test_whether_each_live_hosts_build_network_reaches_the_farm(fake_redis: fakeredis.FakeRedis, unit_settings: Settings) -> None:
    beat(fake_redis, unit_settings, "h1", {"build_network": {"network": "none", "reaches_farm": False}})
    beat(fake_redis, unit_settings, "h2", {"build_network": {"network": "host", "reaches_farm": True}})
    beat(fake_redis, unit_settings, "h3", {"build_network": {"network": "none", "reaches_farm": None, "error": "no image"}})
    beat(fake_redis, unit_settings, "h4", {})
    samples = collected(unit_settings, fake_redis, fake_redis)
    reaches = {(dict(labels)["host"], dict(labels)["network"]): value for (name, labels), value in samples.items()
               if name == "dockyard_build_network_reaches_farm"}
    assert reaches == {("h1", "none"): 0, ("h2", "host"): 1}, "a probe that did not run is absent"


# spills: counted where placement decides (the caller), read by every worker


@pytest.fixture
def routing(monkeypatch: pytest.MonkeyPatch, fake_redis: fakeredis.FakeRedis) -> Settings:
    """Placement reads ``get_settings()`` and ``redis_for`` (broker and cache are one Redis here)."""
    settings = make_settings(default_namespace="team")
    monkeypatch.setattr(dockyard.config.settings, "get_settings", lambda: settings)
    monkeypatch.setattr(dockyard.tasks.keyspace, "redis_for", lambda _settings: fake_redis)
    return settings


def saturated_preferred_host(connection: redis.Redis, settings: Settings) -> dict[str, Any]:
    """h2 built the lineage of the message returned and runs as much as it can; h1 is free."""
    for name in ("h1", "h2"):
        beat(connection, settings, name, {"concurrency": 1, "build_queue": settings.build_queue})
    record_built(connection, settings, Lineage("team/app", "Dockerfile"), "h2")
    connection.hset(inflight_key(settings, "h2"), "task-0:0", "1")
    return {"spec": {"image_name": "team/app", "tag": "v1", "dockerfile": "Dockerfile", "build_backend": "docker-py",
                     "build_kwargs": {}, "key": "0" * 64}}


def test_each_spill_is_counted_under_its_preferred_host(routing: Settings, fake_redis: fakeredis.FakeRedis) -> None:
    message = saturated_preferred_host(fake_redis, routing)
    assert placement_queue([], message) is None and placement_queue([], message) is None, "spilled twice"
    assert fake_redis.hgetall(spills_key(routing.build_queue)) == {b"h2": b"2"}
    assert 0 < fake_redis.ttl(spills_key(routing.build_queue)) <= 31 * 24 * 3600
    samples = collected(make_settings(host_id="h1"), fake_redis, fake_redis)
    assert samples[("dockyard_placement_spills_total", host("h2"))] == 2
    fake_redis.hdel(inflight_key(routing, "h2"), "task-0:0")
    assert placement_queue([], message) == host_queue("h2"), "preferred and free: no spill"
    assert fake_redis.hgetall(spills_key(routing.build_queue)) == {b"h2": b"2"}


def test_a_spill_count_a_caller_garbled_does_not_break_the_scrape(
    fake_redis: fakeredis.FakeRedis, unit_settings: Settings
) -> None:
    fake_redis.hset(spills_key(unit_settings.build_queue), mapping={"h1": "many", "h2": "3"})
    samples = collected(unit_settings, fake_redis, fake_redis)
    assert samples[("dockyard_placement_spills_total", host("h1"))] == 0
    assert samples[("dockyard_placement_spills_total", host("h2"))] == 3


def test_a_spill_that_cannot_be_counted_still_goes_to_the_shared_queue(
    routing: Settings, fake_redis: fakeredis.FakeRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    message = saturated_preferred_host(fake_redis, routing)

    def refused(*_: Any) -> None:
        raise redis.exceptions.NoPermissionError("NOPERM")

    monkeypatch.setattr(dockyard.tasks.routing.placement, "count_spill", refused)
    assert placement_queue([], message) is None


# the server


@pytest.fixture
def fake_server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def served(fake_server: fakeredis.FakeServer) -> Iterator[tuple[str, fakeredis.FakeRedis]]:
    """A worker's /metrics on a free port of 127.0.0.1, over fakeredis (as cache and broker)."""
    connection = fakeredis.FakeRedis(server=fake_server)
    server = serve_metrics(make_settings(metrics_bind="127.0.0.1", metrics_port=0), connection, connection)
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", connection
    finally:
        server.shutdown()
        server.server_close()


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.headers.get("Content-Type", ""), answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Content-Type", ""), error.read().decode()


def test_the_server_serves_metrics_over_http_on_a_free_port(
    served: tuple[str, fakeredis.FakeRedis], unit_settings: Settings
) -> None:
    url, connection = served
    count(connection, unit_settings, "builds_total", 2)
    observe(connection, unit_settings, "build_seconds", 4.0)
    beat(connection, unit_settings, "h1", {})
    connection.lpush(of_default(host_queue("h1")), "m1")
    status, content_type, text = get(url + "/metrics")
    assert status == 200 and content_type.startswith("text/plain")
    samples = scrape_text(text)
    assert samples[("dockyard_builds_total", host())] == 2
    assert samples[("dockyard_build_seconds_count", host())] == 1
    assert samples[("dockyard_build_seconds_bucket", host(le="5.0"))] == 1
    assert depths(samples)[host_queue("h1")] == 1
    assert get(url + "/elsewhere")[0] == 404


def test_a_scrape_while_redis_is_away_is_a_503_and_the_server_goes_on(
    served: tuple[str, fakeredis.FakeRedis], fake_server: fakeredis.FakeServer
) -> None:
    url, _connection = served
    fake_server.connected = False
    status, _, text = get(url + "/metrics")
    assert status == 503 and "Redis" in text
    fake_server.connected = True
    assert get(url + "/metrics")[0] == 200
