"""dockyard.tasks.farm.disk_budget, dockyard.tasks.engine.disk_usage and dockyard.tasks.farm.image_use: LRU eviction within a host's budget,
pins, and the order of forgetting and removing. fakeredis and the fake engine (tests/unit/fakes.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest

from dockyard.config.settings import Settings
from dockyard.tasks.engine import disk_usage
from dockyard.tasks.farm import hosts
from dockyard.tasks.farm import image_use
from dockyard.tasks import keyspace
from dockyard.tasks.cache.single_flight import build_cache, push_cache
from dockyard.tasks.context.store import upload_context
from dockyard.tasks.farm.disk_budget import enforce, least_recently_used
from dockyard.tasks.engine.disk_usage import ImageLayers, chain_ids, footprint, image_layers
from dockyard.tasks.worker.build import execute_build, execute_tag
from dockyard.tasks.worker.holder import Forward
from dockyard.tasks.worker.push import execute_push
from dockyard.tasks.prepare import prepare_build
from dockyard.tasks.request.spec import BuildSpec, PushRequest
from dockyard.tasks.teams.pushing import note_owned
from dockyard.tasks.worker.here import Here
from tests.unit.fakes import BUILT_LAYER_BYTES, FakeEngine, Output
from tests.unit.support import Clock, make_settings
from tests.probes import forget_layers, store_entry

NAME = "reg.io/team/app"
BASE = "sha256:" + "b" * 64
BASE_LAYER = ("sha256:base-layer", 1000)


@pytest.fixture(autouse=True)
def fresh_layers() -> Iterator[None]:
    forget_layers()  # image ids repeat across tests
    yield
    forget_layers()


def settings_with(budget: int, **overrides: Any) -> Settings:
    return make_settings(host_id="h1", disk_budget_bytes=budget, lease_s=0.5, wait_wake_s=0.01, **overrides)


def image(n: int) -> str:
    return f"sha256:{n:064x}"


def dockyard_image(
    connection: fakeredis.FakeRedis, settings: Settings, engine: FakeEngine, n: int, used_at: float, *, size: int = 100,
    host_id: str = "h1",
) -> str:
    """An image dockyard built on ``host_id`` over the base: its cache entry, location, index and last use."""
    image_id = engine.add_image(image(n), [BASE_LAYER, (f"sha256:own-{n}", size)], tags=(f"{NAME}:{n}",))
    cache_key = f"{n:064x}"
    store_entry(build_cache(connection, settings), cache_key, {"image_id": image_id}, host=host_id)
    hosts.record_image(
        connection, settings, host_id=host_id, image_id=image_id, references=[f"{NAME}:{n}"],
        cache_keys=[build_cache(connection, settings).entry_key(cache_key)],
    )
    connection.zadd(image_use.used_key(settings, host_id), {image_id: used_at})
    return image_id


@pytest.fixture
def farm(engine: FakeEngine) -> FakeEngine:
    """An engine with a base image (not dockyard's) of 1000 bytes."""
    engine.add_image(BASE, [BASE_LAYER], tags=("base/busybox:1",))
    return engine


# sizes


def test_a_layer_shared_by_several_images_counts_once_and_one_shared_with_other_images_not_at_all() -> None:
    base = ImageLayers("base", (("c0", 1000),))
    first = ImageLayers("a", (("c0", 1000), ("c1", 300), ("c2", 10)))
    second = ImageLayers("b", (("c0", 1000), ("c1", 300), ("c3", 20)))
    assert footprint([first, second], [base]) == 300 + 10 + 20
    assert footprint([first, second], []) == 1000 + 300 + 10 + 20
    assert footprint([], [base]) == 0


def test_chain_ids_tell_the_same_layer_on_another_chain_apart() -> None:
    assert chain_ids(["d1", "d2"])[0] == "d1"
    assert chain_ids(["d1", "d2"])[1] != chain_ids(["d0", "d2"])[1]
    assert chain_ids(["d1", "d2", "d3"])[:2] == chain_ids(["d1", "d2"])


def test_layer_sizes_come_from_the_history_entries_that_made_layers() -> None:
    history_newest_first = [{"Size": 0}, {"Size": 20}, {"Size": 0}, {"Size": 300}, {"Size": 1000}]
    layers = image_layers("x", ["d1", "d2", "d3"], history_newest_first)
    assert [size for _, size in layers.layers] == [1000, 300, 20]
    assert layers.size == 1320


def test_least_recently_used_first_ties_by_id() -> None:
    assert least_recently_used({"c": 3.0, "a": 1.0, "b": 1.0, "d": 2.0}) == ["a", "b", "d", "c"]


# eviction


def test_over_budget_the_least_recently_used_go_until_within_it(fake_redis: fakeredis.FakeRedis, farm: FakeEngine) -> None:
    settings = settings_with(300)
    ids = [dockyard_image(fake_redis, settings, farm, n, used_at=1000.0 + (n * 7) % 5) for n in range(1, 6)]
    by_age = sorted(ids, key=lambda image_id: (1000.0 + (int(image_id[7:], 16) * 7) % 5, image_id))
    report = enforce(fake_redis, settings, farm)  # type: ignore[arg-type]
    assert report is not None
    assert (report.before, report.after, report.budget) == (500, 300, 300), "the base layer is not dockyard's"
    assert report.evicted == by_age[:2]
    assert farm.image_ids == {BASE, *by_age[2:]}, "the base image stays"
    assert sorted(image_use.last_uses(fake_redis, settings, "h1")) == sorted(by_age[2:])
    assert enforce(fake_redis, settings, farm).evicted == []  # type: ignore[union-attr, arg-type]


def test_a_hit_makes_an_image_recent_again(fake_redis: fakeredis.FakeRedis, farm: FakeEngine, clock: Clock) -> None:
    settings = settings_with(200)
    oldest, middle, newest = (dockyard_image(fake_redis, settings, farm, n, used_at=clock.now - 100 + n) for n in (1, 2, 3))
    image_use.refresh_use(fake_redis, settings, "h1", oldest)  # a push of it, now
    report = enforce(fake_redis, settings, farm)  # type: ignore[arg-type]
    assert report is not None and report.evicted == [middle]
    assert {oldest, newest} <= farm.image_ids


def test_a_callers_hit_counts_but_never_makes_an_image_a_candidate(
    fake_redis: fakeredis.FakeRedis, farm: FakeEngine, clock: Clock
) -> None:
    settings = settings_with(100)
    older, newer = (dockyard_image(fake_redis, settings, farm, n, used_at=clock.now - 100 + n) for n in (1, 2))
    pipe = fake_redis.pipeline()
    image_use.note_hit(pipe, settings, "h1", older)
    image_use.note_hit(pipe, settings, "h1", BASE)  # a caller cannot make the base image dockyard's
    pipe.execute()
    report = enforce(fake_redis, settings, farm)  # type: ignore[arg-type]
    assert report is not None and report.evicted == [newer]
    assert {BASE, older} <= farm.image_ids
    assert fake_redis.zrange(image_use.seen_key(settings, "h1"), 0, -1) == [older.encode()], "strays pruned"


def test_a_pinned_image_is_left_and_the_next_goes(fake_redis: fakeredis.FakeRedis, farm: FakeEngine) -> None:
    settings = settings_with(200)
    first, second, third = (dockyard_image(fake_redis, settings, farm, n, used_at=1000.0 + n) for n in (1, 2, 3))
    task = image_use.Pins(fake_redis, settings)
    assert task.pin(first)
    report = enforce(fake_redis, settings, farm)  # type: ignore[arg-type]
    assert report is not None and (report.pinned, report.evicted) == ([first], [second])
    assert {first, third} <= farm.image_ids
    assert build_cache(fake_redis, settings).peek(f"{1:064x}") is not None, "a pinned image keeps its entry"
    task.release()
    settings_after = settings_with(100)
    assert enforce(fake_redis, settings_after, farm).evicted == [first]  # type: ignore[union-attr, arg-type]


def test_a_dead_tasks_pin_expires_after_the_time_limit(fake_redis: fakeredis.FakeRedis, farm: FakeEngine, clock: Clock) -> None:
    settings = settings_with(0)
    only = dockyard_image(fake_redis, settings, farm, 1, used_at=clock.now)
    assert image_use.Pins(fake_redis, settings).pin(only)  # never released: its task died
    assert not image_use.claim_for_eviction(fake_redis, settings, "h1", only)
    clock.advance(settings.task_time_limit_s + settings.lease_s + 1)
    assert image_use.claim_for_eviction(fake_redis, settings, "h1", only)


def test_a_claimed_image_cannot_be_pinned_and_a_pinned_one_cannot_be_claimed(
    fake_redis: fakeredis.FakeRedis, farm: FakeEngine
) -> None:
    settings = settings_with(0)
    claimed, pinned = (dockyard_image(fake_redis, settings, farm, n, used_at=1.0) for n in (1, 2))
    assert image_use.claim_for_eviction(fake_redis, settings, "h1", claimed)
    assert not image_use.Pins(fake_redis, settings).pin(claimed), "a task takes a claimed image as gone"
    assert image_use.Pins(fake_redis, settings).pin(pinned)
    assert not image_use.claim_for_eviction(fake_redis, settings, "h1", pinned)
    image_use.end_eviction(fake_redis, settings, "h1", claimed)
    assert image_use.Pins(fake_redis, settings).pin(claimed)


def test_entries_and_locations_go_before_the_engine_removes_the_image(
    fake_redis: fakeredis.FakeRedis, farm: FakeEngine
) -> None:
    settings = settings_with(100)
    old = dockyard_image(fake_redis, settings, farm, 1, used_at=1.0)
    dockyard_image(fake_redis, settings, farm, 2, used_at=2.0)
    seen_at_removal: list[dict[str, Any]] = []

    def look(image_id: str) -> None:
        seen_at_removal.append({
            "entry": build_cache(fake_redis, settings).peek(f"{1:064x}"),
            "location": hosts.locate_images(fake_redis, settings, [f"{NAME}:1"])[0],
            "index": hosts.recorded_images(fake_redis, settings, "h1"),
            "claimed": bool(fake_redis.exists(image_use.evicting_key(settings, "h1", image_id))),
        })

    farm.on_remove = look
    report = enforce(fake_redis, settings, farm)  # type: ignore[arg-type]
    assert report is not None and report.evicted == [old]
    assert seen_at_removal == [{"entry": None, "location": None, "index": [image(2)], "claimed": True}]
    assert not fake_redis.exists(image_use.evicting_key(settings, "h1", old)), "the claim ends with the removal"


def test_an_image_the_engine_will_not_remove_stops_counting_and_the_next_goes(
    fake_redis: fakeredis.FakeRedis, farm: FakeEngine
) -> None:
    settings = settings_with(100)
    first, second, third = (dockyard_image(fake_redis, settings, farm, n, used_at=float(n)) for n in (1, 2, 3))
    farm.refuse_removal.add(first)  # a child image, a running container
    report = enforce(fake_redis, settings, farm)  # type: ignore[arg-type]
    assert report is not None and (report.refused, report.evicted, report.after) == ([first], [second], 100)
    assert first in farm.image_ids and third in farm.image_ids


def test_only_this_hosts_images_are_candidates(fake_redis: fakeredis.FakeRedis, farm: FakeEngine) -> None:
    settings = settings_with(100)
    dockyard_image(fake_redis, settings, farm, 1, used_at=1.0, host_id="h2")  # the same engine, another host id
    farm.add_image(image(9), [BASE_LAYER, ("sha256:someone-elses", 5000)], tags=("other/tool:1",))
    mine = dockyard_image(fake_redis, settings, farm, 2, used_at=2.0)
    report = enforce(fake_redis, settings, farm)  # type: ignore[arg-type]
    assert report is not None and (report.before, report.evicted) == (100, [])
    assert {image(1), image(9), mine} <= farm.image_ids


def test_images_gone_from_the_engine_leave_the_record(fake_redis: fakeredis.FakeRedis, farm: FakeEngine) -> None:
    settings = settings_with(1000)
    gone = dockyard_image(fake_redis, settings, farm, 1, used_at=1.0)
    farm.delete(gone)
    report = enforce(fake_redis, settings, farm)  # type: ignore[arg-type]
    assert report is not None and report.gone == [gone]
    assert image_use.last_uses(fake_redis, settings, "h1") == {}


def test_no_budget_removes_nothing(fake_redis: fakeredis.FakeRedis, farm: FakeEngine) -> None:
    settings = settings_with(0)
    dockyard_image(fake_redis, settings, farm, 1, used_at=1.0)
    report = enforce(fake_redis, settings, farm)  # type: ignore[arg-type]
    assert report is not None and (report.before, report.evicted) == (100, [])


def test_one_pass_at_a_time_per_host(fake_redis: fakeredis.FakeRedis, farm: FakeEngine) -> None:
    settings = settings_with(100)
    lock = fake_redis.lock("unit:disk-budget:h1", timeout=10)
    assert lock.acquire(blocking=False)
    assert enforce(fake_redis, settings, farm) is None  # type: ignore[arg-type]
    lock.release()
    assert enforce(fake_redis, settings, farm) is not None  # type: ignore[arg-type]


# the tasks' side: last use, pins, and every later request a hit or a rebuild


@pytest.fixture
def context(tmp_path: Path) -> Path:
    (tmp_path / "Dockerfile").write_text("FROM scratch\nCOPY app.py /\n")
    (tmp_path / "app.py").write_text("print('hi')\n")
    return tmp_path


def spec_for(connection: fakeredis.FakeRedis, settings: Settings, context: Path, tag: str) -> BuildSpec:
    (context / "app.py").write_text(f"print({tag!r})\n")
    spec, packed = prepare_build({"image_name": NAME, "tag": tag, "path": str(context)}, settings)
    try:
        upload_context(keyspace.context_store_for(settings), settings, packed)  # the context store
    finally:
        packed.close()
    return spec


def run_build(spec: BuildSpec, connection: fakeredis.FakeRedis, settings: Settings, engine: FakeEngine) -> Any:
    return execute_build(spec, here=Here(settings, connection, engine, Output()))  # type: ignore[arg-type]


def run_push(request: PushRequest, connection: fakeredis.FakeRedis, settings: Settings, engine: FakeEngine) -> Any:
    return execute_push(request, None, here=Here(settings, connection, engine, Output()))  # type: ignore[arg-type]


def test_builds_hits_tags_and_pushes_record_last_use(
    fake_redis: fakeredis.FakeRedis, engine: FakeEngine, context: Path, clock: Clock, fake_registry: Any
) -> None:
    settings = settings_with(0)
    spec = spec_for(fake_redis, settings, context, "v1")
    built = run_build(spec, fake_redis, settings, engine)
    assert image_use.last_uses(fake_redis, settings, "h1") == {built["image_id"]: clock.now}
    clock.advance(5)
    assert run_build(spec, fake_redis, settings, engine)["cache"] == "hit"
    assert image_use.last_uses(fake_redis, settings, "h1") == {built["image_id"]: clock.now}
    clock.advance(5)
    execute_tag(spec, built["image_id"], "hit", here=Here(settings, fake_redis, engine, Output()))  # type: ignore[arg-type]
    assert image_use.last_uses(fake_redis, settings, "h1") == {built["image_id"]: clock.now}
    clock.advance(5)
    run_push(PushRequest.parse({"image_name": NAME, "tag": "v1", "image_id": built["image_id"]}), fake_redis, settings, engine)
    assert image_use.last_uses(fake_redis, settings, "h1") == {built["image_id"]: clock.now}
    assert not fake_redis.keys("unit:pins:*"), "every task released its pins"


def test_a_push_of_an_image_not_built_by_dockyard_does_not_make_it_a_candidate(
    fake_redis: fakeredis.FakeRedis, engine: FakeEngine, fake_registry: Any
) -> None:
    settings = settings_with(0)
    engine.add_image(BASE, [BASE_LAYER], tags=(f"{NAME}:hand",))
    note_owned(fake_redis, settings, BASE)  # the team had it (say, a build of its own whose records expired)
    run_push(PushRequest.parse({"image_name": NAME, "tag": "hand"}), fake_redis, settings, engine)
    assert image_use.last_uses(fake_redis, settings, "h1") == {}


def test_after_eviction_every_build_and_push_of_the_keys_is_a_hit_or_a_rebuild(
    fake_redis: fakeredis.FakeRedis, engine: FakeEngine, context: Path, clock: Clock, fake_registry: Any
) -> None:
    settings = settings_with(3 * BUILT_LAYER_BYTES)
    specs = [spec_for(fake_redis, settings, context, f"v{n}") for n in range(10)]
    first: list[Any] = []
    for spec in specs:
        clock.advance(1)
        first.append(run_build(spec, fake_redis, settings, engine))
        enforce(fake_redis, settings, engine)  # type: ignore[arg-type]  (the worker's pass after a build)
    assert len(engine.image_ids) == 3 and disk_usage.footprint(
        [disk_usage.read_layers(engine, each) for each in engine.image_ids], []  # type: ignore[arg-type]
    ) <= settings.disk_budget_bytes
    evicted = [result["image_id"] for result in first[:7]]
    assert not engine.image_ids & set(evicted)
    # Each rebuild (and its push) is the most recent use, so the pass after it evicts the least recently
    # used first build still standing: v7's after v0's rebuild, v8's after v1's, v9's after v2's. By the
    # time its key is asked again, every first build is gone: ten misses, each built again under a new id.
    answers = []
    for spec, result in zip(specs, first):
        clock.advance(1)
        assert result["image_id"] not in engine.image_ids, f"{spec.tag}'s first build was evicted before it is asked again"
        again = run_build(spec, fake_redis, settings, engine)
        answers.append(again["cache"])
        assert again["cache"] == "built" and again["image_id"] != result["image_id"], f"{spec.tag} is rebuilt, not answered"
        assert again["image_id"] in engine.image_ids and engine.refs[f"{NAME}:{spec.tag}"] == again["image_id"]
        builds = len(engine.builds)
        pushed = run_push(
            PushRequest.parse({"image_name": NAME, "tag": spec.tag, "image_id": result["image_id"]}),  # the first build's id
            fake_redis, settings, engine,
        )
        assert not isinstance(pushed, Forward)
        assert len(engine.builds) == builds, "the push of the evicted id takes the rebuild of its key, no third build"
        assert pushed["digest"] == engine.digests[again["image_id"]], "the rebuilt image is the one pushed"
        enforce(fake_redis, settings, engine)  # type: ignore[arg-type]
    assert answers == ["built"] * 10, "every first build was evicted: every key is a miss, built again"
    assert len(engine.image_ids) == 3


def test_a_push_of_an_evicted_image_rebuilds_it_by_the_same_key(
    fake_redis: fakeredis.FakeRedis, engine: FakeEngine, context: Path, clock: Clock, fake_registry: Any
) -> None:
    settings = settings_with(BUILT_LAYER_BYTES)
    old_spec, new_spec = spec_for(fake_redis, settings, context, "old"), spec_for(fake_redis, settings, context, "new")
    old = run_build(old_spec, fake_redis, settings, engine)
    clock.advance(1)
    run_build(new_spec, fake_redis, settings, engine)
    assert enforce(fake_redis, settings, engine).evicted == [old["image_id"]]  # type: ignore[union-attr, arg-type]
    builds = len(engine.builds)
    pushed = run_push(PushRequest.parse({"image_name": NAME, "tag": "old", "image_id": old["image_id"]}), fake_redis, settings, engine)
    assert len(engine.builds) == builds + 1, "rebuilt"
    rebuilt = build_cache(fake_redis, settings).peek(fake_redis.get(f"unit:built-by:{old['image_id']}").decode())
    assert rebuilt is not None and engine.refs[f"{NAME}:old"] == rebuilt.value["image_id"] != old["image_id"]
    assert pushed["digest"] == engine.digests[rebuilt.value["image_id"]]


def test_a_tag_of_an_image_being_evicted_rebuilds(
    fake_redis: fakeredis.FakeRedis, engine: FakeEngine, context: Path
) -> None:
    settings = settings_with(0)
    spec = spec_for(fake_redis, settings, context, "v1")
    built = run_build(spec, fake_redis, settings, engine)
    assert image_use.claim_for_eviction(fake_redis, settings, "h1", built["image_id"])  # the pass is under way
    tagged = execute_tag(spec, built["image_id"], "hit", here=Here(settings, fake_redis, engine, Output()))  # type: ignore[arg-type]
    assert not isinstance(tagged, Forward)
    assert (tagged["cache"], len(engine.builds)) == ("built", 2)
    assert tagged["image_id"] != built["image_id"]


def test_a_hit_on_an_image_being_evicted_is_a_miss(fake_redis: fakeredis.FakeRedis, engine: FakeEngine, context: Path) -> None:
    settings = settings_with(0)
    spec = spec_for(fake_redis, settings, context, "v1")
    built = run_build(spec, fake_redis, settings, engine)
    assert image_use.claim_for_eviction(fake_redis, settings, "h1", built["image_id"])
    again = run_build(spec, fake_redis, settings, engine)
    assert (again["cache"], len(engine.builds)) == ("built", 2)
    assert push_cache(fake_redis, settings).peek("nothing") is None


def test_the_use_records_expire_unless_a_pass_renews_them(fake_redis: fakeredis.FakeRedis, farm: FakeEngine) -> None:
    settings = settings_with(1000)
    dockyard_image(fake_redis, settings, farm, 1, used_at=1.0)
    pipe = fake_redis.pipeline()
    image_use.note_hit(pipe, settings, "h1", image(1))
    pipe.execute()
    enforce(fake_redis, settings, farm)  # type: ignore[arg-type]
    for name in (image_use.used_key(settings, "h1"), image_use.seen_key(settings, "h1")):
        assert 0 < fake_redis.ttl(name) <= image_use.RECORD_TTL_S, name


def test_a_push_by_tag_of_an_evicted_image_rebuilds_it(
    fake_redis: fakeredis.FakeRedis, engine: FakeEngine, context: Path, clock: Clock, fake_registry: Any
) -> None:
    settings = settings_with(BUILT_LAYER_BYTES)
    old = run_build(spec_for(fake_redis, settings, context, "old"), fake_redis, settings, engine)
    clock.advance(1)
    run_build(spec_for(fake_redis, settings, context, "new"), fake_redis, settings, engine)
    assert enforce(fake_redis, settings, engine).evicted == [old["image_id"]]  # type: ignore[union-attr, arg-type]
    assert image_use.evicted_image(fake_redis, settings, f"{NAME}:old") == old["image_id"]
    assert image_use.evicted_image(fake_redis, settings, f"{NAME}:new") is None
    builds = len(engine.builds)
    pushed = run_push(PushRequest.parse({"image_name": NAME, "tag": "old"}), fake_redis, settings, engine)  # no image id
    assert len(engine.builds) == builds + 1, "rebuilt by the same key"
    assert pushed["digest"] == engine.digests[engine.refs[f"{NAME}:old"]]


def test_a_tag_that_moved_to_another_image_is_not_marked_evicted(
    fake_redis: fakeredis.FakeRedis, farm: FakeEngine
) -> None:
    settings = settings_with(100)
    old = dockyard_image(fake_redis, settings, farm, 1, used_at=1.0)
    newer = dockyard_image(fake_redis, settings, farm, 2, used_at=2.0)
    hosts.record_image(fake_redis, settings, host_id="h1", image_id=newer, references=[f"{NAME}:1"])  # v1 moved on
    assert enforce(fake_redis, settings, farm).evicted == [old]  # type: ignore[union-attr, arg-type]
    assert image_use.evicted_image(fake_redis, settings, f"{NAME}:1") is None
    assert hosts.locate_images(fake_redis, settings, [f"{NAME}:1"]) == [{"host": "h1", "image_id": newer}]


def test_a_build_whose_cache_probe_lost_an_image_to_a_removal_runs_again(
    fake_redis: fakeredis.FakeRedis, engine: FakeEngine, context: Path
) -> None:
    from dockyard.tasks.errors import BuilderRace, BuildError, engine_error

    race = 'unable to find image "sha256:' + "a" * 64 + '"'
    assert isinstance(engine_error(race, doing="build"), BuilderRace)
    assert not isinstance(engine_error("The command '/bin/sh -c x' returned a non-zero code: 1", doing="build"), BuilderRace)
    settings = settings_with(0)
    spec = spec_for(fake_redis, settings, context, "v1")
    engine.build_error, engine.build_error_once = race, True  # the disk budget removed an image meanwhile
    built = run_build(spec, fake_redis, settings, engine)
    assert (built["cache"], len(engine.builds)) == ("built", 2)
    engine.build_error, engine.build_error_once = race, False
    with pytest.raises(BuildError):
        run_build(spec_for(fake_redis, settings, context, "v2"), fake_redis, settings, engine)
    assert len(engine.builds) == 2 + 3, "three attempts, then the error"
