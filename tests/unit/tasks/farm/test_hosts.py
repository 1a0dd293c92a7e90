"""dockyard.tasks.farm.hosts: heartbeats that expire, and the image location index (fakeredis)."""

from __future__ import annotations

import json

import fakeredis

from dockyard.config.settings import Settings
from dockyard.tasks.farm.hosts import beat, forget_host, forget_image, is_alive, live_hosts, locate_images, record_image
from tests.unit.support import Clock, make_settings


def test_a_host_that_beat_is_alive_with_its_record(
    fake_redis: fakeredis.FakeRedis, unit_settings: Settings, clock: Clock
) -> None:
    beat(fake_redis, unit_settings, "h1", {"engine": "27.0"})
    assert is_alive(fake_redis, unit_settings, "h1")
    assert live_hosts(fake_redis, unit_settings) == [{"engine": "27.0", "host": "h1", "seen_at": clock.now}]


def test_a_host_whose_heartbeat_expired_is_not_alive(fake_redis: fakeredis.FakeRedis, clock: Clock) -> None:
    settings = make_settings(heartbeat_ttl_s=0.5)
    beat(fake_redis, settings, "h1", {})
    clock.advance(0.4)
    assert is_alive(fake_redis, settings, "h1")
    clock.advance(0.2)
    assert not is_alive(fake_redis, settings, "h1")
    assert live_hosts(fake_redis, settings) == []


def test_a_host_never_seen_is_not_alive(fake_redis: fakeredis.FakeRedis, unit_settings: Settings) -> None:
    beat(fake_redis, unit_settings, "h1", {})
    assert not is_alive(fake_redis, unit_settings, "h9")


def test_a_new_beat_renews_the_record(fake_redis: fakeredis.FakeRedis, clock: Clock) -> None:
    settings = make_settings(heartbeat_ttl_s=1)
    beat(fake_redis, settings, "h1", {})
    clock.advance(0.8)
    beat(fake_redis, settings, "h1", {})
    clock.advance(0.8)
    assert is_alive(fake_redis, settings, "h1")


def test_a_forgotten_host_is_not_alive(fake_redis: fakeredis.FakeRedis, unit_settings: Settings) -> None:
    beat(fake_redis, unit_settings, "h1", {})
    forget_host(fake_redis, unit_settings, "h1")
    assert not is_alive(fake_redis, unit_settings, "h1")
    assert live_hosts(fake_redis, unit_settings) == []


def test_live_hosts_lists_only_the_live_ones_sorted(fake_redis: fakeredis.FakeRedis, clock: Clock) -> None:
    settings = make_settings(heartbeat_ttl_s=1)
    beat(fake_redis, settings, "old", {})
    clock.advance(0.6)
    for host in ("h2", "h1"):
        beat(fake_redis, settings, host, {})
    clock.advance(0.6)
    assert [record["host"] for record in live_hosts(fake_redis, settings)] == ["h1", "h2"]


def test_hosts_of_another_key_prefix_are_not_seen(fake_redis: fakeredis.FakeRedis, unit_settings: Settings) -> None:
    beat(fake_redis, make_settings(key_prefix="other:"), "h1", {})
    assert not is_alive(fake_redis, unit_settings, "h1")
    assert live_hosts(fake_redis, unit_settings) == []


def test_record_image_gives_every_key_it_writes_the_cache_ttl(
    fake_redis: fakeredis.FakeRedis, unit_settings: Settings
) -> None:
    record_image(
        fake_redis, unit_settings, host_id="h1", image_id="sha256:a",
        references=["team/app:v1", "team/app:latest"], cache_keys=["unit:build:k1"],
    )
    written = fake_redis.keys("*")
    assert sorted(written) == [
        b"unit:byimage:h1:sha256:a",
        b"unit:team:default:image:team/app:latest",  # the locations are the team's
        b"unit:team:default:image:team/app:v1",
        b"unit:team:default:owns:sha256:a",  # and the team had the image (it may push it)
    ], written
    for name in written:
        assert 0 < fake_redis.ttl(name) <= unit_settings.cache_ttl_s, name


def test_locate_images_answers_each_reference_or_none(
    fake_redis: fakeredis.FakeRedis, unit_settings: Settings
) -> None:
    record_image(fake_redis, unit_settings, host_id="h2", image_id="sha256:a", references=["team/app:v1"])
    assert locate_images(fake_redis, unit_settings, ["team/app:v1", "team/app:v2"]) == [
        {"host": "h2", "image_id": "sha256:a"},
        None,
    ]
    assert locate_images(fake_redis, unit_settings, []) == []


def test_image_locations_expire_with_the_cache_ttl(fake_redis: fakeredis.FakeRedis, clock: Clock) -> None:
    settings = make_settings(cache_ttl_s=60)
    record_image(fake_redis, settings, host_id="h1", image_id="sha256:a", references=["team/app:v1"])
    clock.advance(61)
    assert locate_images(fake_redis, settings, ["team/app:v1"]) == [None]


def test_forget_image_drops_its_references_and_cache_keys(
    fake_redis: fakeredis.FakeRedis, unit_settings: Settings
) -> None:
    fake_redis.set("unit:build:k1", "entry")
    record_image(
        fake_redis, unit_settings, host_id="h1", image_id="sha256:a",
        references=["team/app:v1", "team/app:latest"], cache_keys=["unit:build:k1"],
    )
    assert forget_image(fake_redis, unit_settings, host_id="h1", image_id="sha256:a") == 4
    # the team still had the image: a push of an evicted reference rebuilds it for the team
    assert fake_redis.keys("*") == [b"unit:team:default:owns:sha256:a"]


def test_forget_image_keeps_a_reference_that_now_names_another_image(
    fake_redis: fakeredis.FakeRedis, unit_settings: Settings
) -> None:
    record_image(fake_redis, unit_settings, host_id="h1", image_id="sha256:old", references=["team/app:v1"])
    record_image(fake_redis, unit_settings, host_id="h1", image_id="sha256:new", references=["team/app:v1"])
    forget_image(fake_redis, unit_settings, host_id="h1", image_id="sha256:old")
    location = json.loads(fake_redis.get("unit:team:default:image:team/app:v1") or b"null")
    assert location == {"host": "h1", "image_id": "sha256:new"}


def test_forget_image_of_another_host_leaves_this_hosts_image(
    fake_redis: fakeredis.FakeRedis, unit_settings: Settings
) -> None:
    record_image(fake_redis, unit_settings, host_id="h1", image_id="sha256:a", references=["team/app:v1"])
    forget_image(fake_redis, unit_settings, host_id="h2", image_id="sha256:a")
    assert locate_images(fake_redis, unit_settings, ["team/app:v1"]) == [{"host": "h1", "image_id": "sha256:a"}]
