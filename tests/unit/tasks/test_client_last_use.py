"""dockyard.tasks.client: a hit answered from Redis (no worker) counts as a use of its image for the disk budget."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis

from dockyard.config.settings import Settings
from dockyard.tasks import client
from dockyard.tasks.farm import hosts
from dockyard.tasks.farm import image_use
from dockyard.tasks import keyspace
from dockyard.tasks.cache.single_flight import build_cache
from dockyard.tasks.prepare import prepare_build
from dockyard.tasks.request.spec import BuildSpec
from tests.unit.support import Clock, make_settings
from tests.probes import store_entry

IMAGE = "sha256:" + "1" * 64


@pytest.fixture
def settings() -> Settings:
    return make_settings()


@pytest.fixture(autouse=True)
def no_farm(monkeypatch: pytest.MonkeyPatch, fake_redis: fakeredis.FakeRedis) -> None:
    monkeypatch.setattr(client, "redis_for", lambda _settings: fake_redis)
    monkeypatch.setattr(keyspace, "redis_for", lambda _settings: fake_redis)


def cached_spec(connection: fakeredis.FakeRedis, settings: Settings, tmp_path: Path) -> BuildSpec:
    """A spec the farm built on live host h2."""
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    spec, packed = prepare_build({"image_name": "reg.io/team/app", "tag": "v1", "path": str(tmp_path)}, settings)
    packed.close()
    store_entry(build_cache(connection, settings), spec.key, {"image_id": IMAGE}, host="h2")
    hosts.record_image(connection, settings, host_id="h2", image_id=IMAGE, references=spec.references)
    hosts.beat(connection, settings, "h2", {})
    return spec


def test_a_fast_path_hit_notes_its_images_use_on_its_host(
    fake_redis: fakeredis.FakeRedis, settings: Settings, tmp_path: Path, clock: Clock
) -> None:
    spec = cached_spec(fake_redis, settings, tmp_path)
    fake_redis.zadd(image_use.used_key(settings, "h2"), {IMAGE: clock.now - 100})  # built by a worker long ago
    assert client.cached_entry(spec, spec.key, settings) is not None
    assert image_use.last_uses(fake_redis, settings, "h2") == {IMAGE: clock.now}


def test_a_caller_not_allowed_to_note_the_use_still_gets_its_hit(
    fake_redis: fakeredis.FakeRedis, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = cached_spec(fake_redis, settings, tmp_path)

    def refused(pipe: Any, *_: Any) -> None:
        pipe.execute_command("NOSUCHCOMMAND")  # stands for NOPERM: an ACL without the seen: keys

    monkeypatch.setattr(image_use, "note_hit", refused)
    assert client.cached_entry(spec, spec.key, settings) is not None


def test_a_dead_host_still_answers_no_hit(fake_redis: fakeredis.FakeRedis, settings: Settings, tmp_path: Path) -> None:
    spec = cached_spec(fake_redis, settings, tmp_path)
    hosts.forget_host(fake_redis, settings, "h2")
    assert client.cached_entry(spec, spec.key, settings) is None
    with pytest.raises(redis.ResponseError):
        fake_redis.execute_command("NOSUCHCOMMAND")


def test_a_push_by_tag_of_an_evicted_image_is_pinned_to_it(
    fake_redis: fakeredis.FakeRedis, settings: Settings
) -> None:
    from dockyard.tasks.request.arguments import push_request

    request = push_request("reg.io/team/app", settings=settings, tag="v1")
    with pytest.raises(client.PushError):
        client.pinned_push(request, settings)
    image_use.remember_evicted(fake_redis, settings, [("team-b", "reg.io/team/app:v1")], IMAGE)
    with pytest.raises(client.PushError):  # another team's tag of that name is not this team's
        client.pinned_push(request, settings)
    image_use.remember_evicted(fake_redis, settings, [("default", "reg.io/team/app:v1")], IMAGE)
    assert fake_redis.get("unit:team:default:evicted:reg.io/team/app:v1") == IMAGE.encode()
    assert client.pinned_push(request, settings).image_id == IMAGE
