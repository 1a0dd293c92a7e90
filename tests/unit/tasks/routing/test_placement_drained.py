"""Placement skips drained hosts (their record's ``drained``), and a drained host's builds go elsewhere (fakeredis)."""

from __future__ import annotations

from typing import Any

import fakeredis
import pytest

import dockyard.config.settings
import dockyard.tasks.keyspace
from dockyard.config.settings import Settings, host_queue
from dockyard.tasks.farm import drain
from dockyard.tasks.farm.hosts import beat
from dockyard.tasks.routing import placement
from dockyard.tasks.routing.placement import elsewhere_queue, lineage_of_message, placement_queue, record_built
from tests.unit.support import make_settings


@pytest.fixture
def farm(monkeypatch: pytest.MonkeyPatch, fake_redis: fakeredis.FakeRedis) -> Settings:
    settings = make_settings(default_namespace="team")
    monkeypatch.setattr(dockyard.config.settings, "get_settings", lambda: settings)
    monkeypatch.setattr(dockyard.tasks.keyspace, "redis_for", lambda _settings: fake_redis)
    return settings


def live(connection: fakeredis.FakeRedis, settings: Settings, *hosts: str, **fields: Any) -> None:
    for host in hosts:
        beat(connection, settings, host, {"concurrency": 2, "build_queue": settings.build_queue, **fields})


def message(image_name: str = "team/app") -> dict[str, Any]:
    return {"spec": {"image_name": image_name, "tag": "v1", "dockerfile": "Dockerfile", "build_backend": "docker-py",
                     "build_kwargs": {}, "key": "0" * 64}}


def forget_reservations(connection: fakeredis.FakeRedis, *hosts: str) -> None:
    connection.delete(*[placement.placed_key(host) for host in hosts])


def test_a_drained_preferred_host_gets_no_build_of_its_lineage(farm: Settings, fake_redis: fakeredis.FakeRedis) -> None:
    live(fake_redis, farm, "h1", "h2")
    lineage = lineage_of_message([], message(), farm)
    assert lineage is not None
    record_built(fake_redis, farm, lineage, "h2")
    assert placement_queue([], message()) == host_queue("h2")
    forget_reservations(fake_redis, "h2")
    drain.drain(fake_redis, farm, "h2")
    assert placement_queue([], message()) == host_queue("h1"), "the lineage goes to the other live host"
    forget_reservations(fake_redis, "h1")
    drain.undrain(fake_redis, farm, "h2")
    assert placement_queue([], message()) == host_queue("h2"), "undrained, it is preferred again"


def test_a_drained_host_gets_no_new_lineage_and_with_every_host_drained_builds_take_the_shared_queue(
    farm: Settings, fake_redis: fakeredis.FakeRedis
) -> None:
    live(fake_redis, farm, "h1", "h2")
    drain.drain(fake_redis, farm, "h1")
    assert {placement_queue([], message(f"team/new{n}")) for n in range(2)} == {host_queue("h2")}
    forget_reservations(fake_redis, "h2")
    drain.drain(fake_redis, farm, "h2")
    assert placement_queue([], message("team/other")) is None


def test_the_heartbeats_drained_field_is_what_placement_reads(farm: Settings, fake_redis: fakeredis.FakeRedis) -> None:
    live(fake_redis, farm, "h1", "h2", drained=True)
    assert placement_queue([], message()) is None, "both records say drained"
    live(fake_redis, farm, "h2", drained=False)
    assert placement_queue([], message()) == host_queue("h2")


def test_a_build_popped_by_a_drained_host_goes_to_another_live_host_never_back(
    farm: Settings, fake_redis: fakeredis.FakeRedis
) -> None:
    live(fake_redis, farm, "h1", "h2")
    lineage = lineage_of_message([], message(), farm)
    assert lineage is not None
    record_built(fake_redis, farm, lineage, "h1")
    # h1's record may not say drained yet (its next beat writes it): h1 itself is skipped all the same
    assert elsewhere_queue([], message(), farm, "h1") == host_queue("h2")
    forget_reservations(fake_redis, "h2")
    drain.drain(fake_redis, farm, "h2")
    assert elsewhere_queue([], message(), farm, "h1") == farm.build_queue, "no other host in service: the shared queue"
    assert elsewhere_queue([], {"spec": "odd"}, farm, "h1") == farm.build_queue
