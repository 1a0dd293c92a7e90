"""dockyard.tasks.routing.fast_lane and dockyard.tasks.worker.fast_answer: cheap work goes to its holder's fast queue, and the fast
lane answers only from the cache (fakeredis behind get_settings, a fake engine and registry)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import fakeredis
import pytest

import dockyard.config.settings
import dockyard.tasks.keyspace
from dockyard.config.settings import Settings
from dockyard.tasks.worker import fast_answer
from dockyard.tasks.routing import fast_lane
from dockyard.tasks.farm import hosts
from dockyard.tasks.farm import metrics
from dockyard.tasks.registry.base_images import cache_key
from dockyard.tasks.cache.single_flight import build_cache, push_cache
from dockyard.tasks.request.cache_key import push_key
from dockyard.tasks.prepare import prepare_build
from dockyard.tasks.task_names import BUILD_TASK, PING_TASK, PUSH_TASK, TAG_TASK
from dockyard.tasks.routing.router import route_task
from dockyard.tasks.request.spec import BuildSpec, PushRequest
from dockyard.tasks.worker.here import Here
from tests.unit.fakes import FakeEngine, FakeRegistry
from tests.unit.support import make_settings
from tests.probes import store_entry

IMAGE = "sha256:" + "1" * 64
NAME = "reg.io/team/app"


@pytest.fixture
def routed(monkeypatch: pytest.MonkeyPatch, fake_redis: fakeredis.FakeRedis) -> Settings:
    """Routing reads ``get_settings()`` and ``redis_for``: point both at unit objects."""
    settings = make_settings(host_id="h1", placement=False)  # the fast lane alone: placement has tests of its own
    monkeypatch.setattr(dockyard.config.settings, "get_settings", lambda: settings)
    monkeypatch.setattr(dockyard.tasks.keyspace, "redis_for", lambda _settings: fake_redis)
    return settings


@pytest.fixture
def context(tmp_path: Path) -> Path:
    (tmp_path / "Dockerfile").write_text("FROM scratch\nCOPY app.txt /\n")
    (tmp_path / "app.txt").write_text("one\n")
    return tmp_path


def spec_for(settings: Settings, context: Path, **params: Any) -> BuildSpec:
    spec, packed = prepare_build({"image_name": NAME, "tag": "v1", "path": str(context), **params}, settings)
    packed.close()
    return spec


def holder(connection: fakeredis.FakeRedis, settings: Settings, host: str, *, fast: bool = True) -> None:
    """``host`` heartbeats, advertising a fast lane or not."""
    hosts.beat(connection, settings, host, {"fast_queue": dockyard.config.settings.fast_queue(host) if fast else None})


def cached(connection: fakeredis.FakeRedis, settings: Settings, spec: BuildSpec, host: str, key: str | None = None) -> None:
    store_entry(build_cache(connection, settings), key or spec.key, {"image_id": IMAGE}, host=host)
    hosts.record_image(connection, settings, host_id=host, image_id=IMAGE, references=spec.references)


def build_message(spec: BuildSpec) -> dict[str, Any]:
    return {"spec": spec.model_dump()}


# routing


def test_a_build_cached_on_a_live_host_goes_to_its_fast_queue(
    routed: Settings, fake_redis: fakeredis.FakeRedis, context: Path
) -> None:
    spec = spec_for(routed, context)
    cached(fake_redis, routed, spec, "h2")
    holder(fake_redis, routed, "h2")
    assert route_task(BUILD_TASK, [], build_message(spec), {}) == {"queue": "dockyard.host.h2.fast@default"}


def test_a_build_cached_under_other_tags_still_goes_to_the_fast_lane(
    routed: Settings, fake_redis: fakeredis.FakeRedis, context: Path
) -> None:
    """Tagging a cached image is cheap work too."""
    cached(fake_redis, routed, spec_for(routed, context, tag="v1"), "h2")
    holder(fake_redis, routed, "h2")
    retag = spec_for(routed, context, tag="v2")
    assert route_task(BUILD_TASK, [], build_message(retag), {}) == {"queue": "dockyard.host.h2.fast@default"}


@pytest.mark.parametrize("why", ["not cached", "holder dead", "no fast lane", "ignore_cache", "raw arguments"])
def test_other_builds_take_the_default(routed: Settings, fake_redis: fakeredis.FakeRedis, context: Path, why: str) -> None:
    spec = spec_for(routed, context, ignore_cache=why == "ignore_cache")
    if why != "not cached":
        cached(fake_redis, routed, spec, "h2")
    if why != "holder dead":
        holder(fake_redis, routed, "h2", fast=why != "no fast lane")
    message = {"image_name": NAME, "path": str(context)} if why == "raw arguments" else build_message(spec)
    assert route_task(BUILD_TASK, [], message, {}) is None


def test_a_pulling_build_is_routed_by_the_key_last_answered_for_its_content(
    routed: Settings, fake_redis: fakeredis.FakeRedis, tmp_path: Path
) -> None:
    (tmp_path / "Dockerfile").write_text("FROM reg.io/base/img:1\nCOPY app.txt /\n")
    (tmp_path / "app.txt").write_text("one\n")
    spec = spec_for(routed, tmp_path)
    with_bases = cache_key(spec, {"reg.io/base/img:1": "sha256:" + "b" * 64})
    cached(fake_redis, routed, spec, "h2", key=with_bases)
    holder(fake_redis, routed, "h2")
    assert route_task(BUILD_TASK, [], build_message(spec), {}) is None, "no key known for its content yet"
    fast_lane.remember_key(fake_redis, routed, spec, with_bases)
    assert route_task(BUILD_TASK, [], build_message(spec), {}) == {"queue": "dockyard.host.h2.fast@default"}


def test_a_chained_push_answered_from_the_push_cache_goes_to_the_fast_lane(
    routed: Settings, fake_redis: fakeredis.FakeRedis
) -> None:
    build_result = {"image_name": NAME, "tag": "v1", "additional_tags": [], "image_id": IMAGE, "host": "h2"}
    holder(fake_redis, routed, "h2")
    assert route_task(PUSH_TASK, [build_result], {}, {}) == {"queue": "dockyard.host.h2@default"}, "a real push: build lane"
    key = push_key(image_id=IMAGE, repository=NAME, tags=["v1"], registry="reg.io")
    store_entry(push_cache(fake_redis, routed), key, {"digest": "sha256:" + "d" * 64}, host="h2")
    assert route_task(PUSH_TASK, [build_result], {}, {}) == {"queue": "dockyard.host.h2.fast@default"}
    assert route_task(PUSH_TASK, [build_result], {"ignore_cache": True}, {}) == {"queue": "dockyard.host.h2@default"}


def test_a_forwarded_tag_task_goes_to_the_holders_fast_lane(routed: Settings, fake_redis: fakeredis.FakeRedis) -> None:
    holder(fake_redis, routed, "h2")
    holder(fake_redis, routed, "h3", fast=False)
    assert fast_lane.forward_queue(TAG_TASK, "h2", {}) == "dockyard.host.h2.fast"
    assert fast_lane.forward_queue(TAG_TASK, "h3", {}) is None, "no fast lane there: its host queue"


def test_routing_never_fails_a_send(monkeypatch: pytest.MonkeyPatch, context: Path) -> None:
    """Redis away: the task goes the usual way."""
    settings = make_settings()
    monkeypatch.setattr(dockyard.config.settings, "get_settings", lambda: settings)
    spec = spec_for(settings, context)
    assert route_task(BUILD_TASK, [], build_message(spec), {}) is None
    assert route_task(PING_TASK, [], {}, {}) is None


# the fast lane's answers


@pytest.fixture
def worker(fake_redis: fakeredis.FakeRedis) -> Settings:
    return make_settings(host_id="h1")


def answer(spec: BuildSpec, connection: fakeredis.FakeRedis, settings: Settings, engine: FakeEngine) -> Any:
    return fast_answer.answer_build(spec, here=Here(settings, connection, engine, lambda _text: None))  # type: ignore[arg-type]


def test_a_hit_with_its_tags_in_place_is_answered_from_redis_alone(
    worker: Settings, fake_redis: fakeredis.FakeRedis, context: Path
) -> None:
    spec = spec_for(worker, context)
    cached(fake_redis, worker, spec, "h1")
    engine = FakeEngine()  # holds nothing: the engine is not asked
    result = answer(spec, fake_redis, worker, engine)
    assert (result["cache"], result["host"], result["image_id"]) == ("hit", "h1", IMAGE)
    assert engine.refs == {}
    counted = metrics.read(fake_redis, worker, "h1")
    assert counted["cache_hits_total"] == counted["hit_seconds_count"] == 1


def test_a_fast_lane_hit_is_timed_from_the_tasks_start(
    worker: Settings, fake_redis: fakeredis.FakeRedis, context: Path
) -> None:
    spec = spec_for(worker, context)
    cached(fake_redis, worker, spec, "h1")
    started = time.monotonic() - 3
    assert fast_answer.answer_build(spec, here=Here(worker, fake_redis, FakeEngine(), lambda _text: None),  # type: ignore[arg-type]
                                    started=started) is not None
    assert 3 <= metrics.read(fake_redis, worker, "h1")["hit_seconds_sum"] < 6


def test_a_cached_image_under_new_tags_is_tagged_in_the_fast_lane(
    worker: Settings, fake_redis: fakeredis.FakeRedis, context: Path
) -> None:
    cached(fake_redis, worker, spec_for(worker, context, tag="v1"), "h1")
    engine = FakeEngine()
    engine.image_ids.add(IMAGE)
    retag = spec_for(worker, context, tag="v2")
    assert answer(retag, fake_redis, worker, engine)["cache"] == "hit"
    assert engine.refs == {f"{NAME}:v2": IMAGE}
    assert hosts.locate_images(fake_redis, worker, retag.references) == [{"host": "h1", "image_id": IMAGE}]


@pytest.mark.parametrize("why", ["miss", "held elsewhere", "image gone", "ignore_cache"])
def test_work_that_is_not_cheap_is_not_answered(
    worker: Settings, fake_redis: fakeredis.FakeRedis, context: Path, why: str
) -> None:
    cached(fake_redis, worker, spec_for(worker, context, tag="v1"), "h2" if why == "held elsewhere" else "h1")
    if why == "miss":
        build_cache(fake_redis, worker).clear()
    spec = spec_for(worker, context, tag="v2", ignore_cache=why == "ignore_cache")  # v2 needs a tag on the engine
    engine = FakeEngine()
    if why != "image gone":
        engine.image_ids.add(IMAGE)
    assert answer(spec, fake_redis, worker, engine) is None
    assert engine.builds == [] and engine.pushes == []
    assert metrics.read(fake_redis, worker, "h1") == {}, "not answered: no hit counted nor timed"


def test_a_pulling_hit_asks_the_registry_and_never_the_engine(
    worker: Settings, fake_redis: fakeredis.FakeRedis, fake_registry: FakeRegistry, engine: FakeEngine, tmp_path: Path
) -> None:
    (tmp_path / "Dockerfile").write_text("FROM reg.io/base/img:1\n")
    spec = spec_for(worker, tmp_path)
    assert answer(spec, fake_redis, worker, engine) is None, "base unresolvable in the registry: no pull here"
    fake_registry.served["reg.io/base/img:1"] = "sha256:" + "b" * 64
    cached(fake_redis, worker, spec, "h1", key=cache_key(spec, {"reg.io/base/img:1": "sha256:" + "b" * 64}))
    assert answer(spec, fake_redis, worker, engine)["cache"] == "hit"
    fake_registry.served["reg.io/base/img:1"] = "sha256:" + "c" * 64  # re-pushed base: another key, a miss
    assert answer(spec, fake_redis, worker, engine) is None


def test_a_push_is_answered_only_from_the_push_cache(
    worker: Settings, fake_redis: fakeredis.FakeRedis, fake_registry: FakeRegistry, engine: FakeEngine
) -> None:
    engine.image_ids.add(IMAGE)
    request = PushRequest.parse({"image_name": NAME, "tag": "v1", "image_id": IMAGE})
    pushed = fast_answer.answer_push(request, None, here=Here(worker, fake_redis, engine, lambda _text: None))  # type: ignore[arg-type]
    assert pushed is None, "nothing cached: a real push, not in the fast lane"
    digest = "sha256:" + "d" * 64
    key = push_key(image_id=IMAGE, repository=NAME, tags=["v1"], registry="reg.io")
    store_entry(push_cache(fake_redis, worker), key, {"digest": digest}, host="h1")
    fake_registry.served[f"{NAME}:v1"] = "sha256:" + "e" * 64
    assert fast_answer.answer_push(request, None, here=Here(worker, fake_redis, engine, lambda _text: None)) is None, (  # type: ignore[arg-type]
        "the registry serves another digest now: a real push"
    )
    fake_registry.served[f"{NAME}:v1"] = digest
    pushed = fast_answer.answer_push(request, None, here=Here(worker, fake_redis, engine, lambda _text: None))  # type: ignore[arg-type]
    assert pushed is not None and (pushed["cache"], pushed["digest"]) == ("hit", digest)
    assert engine.pushes == []
