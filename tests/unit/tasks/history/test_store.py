"""The history store: records per team, newest first, bounded by count and age."""

from __future__ import annotations

import time

import fakeredis

from dockyard.tasks.history import store
from dockyard.tasks.history.record import BuildRecord, StepRecord
from tests.unit.support import make_settings


def record(record_id: str, *, team: str = "team-a", finished_at: float | None = None, **fields: object) -> BuildRecord:
    return BuildRecord.model_validate({
        "id": record_id, "kind": "build", "team": team, "image_name": "127.0.0.1:5000/team-a/app",
        "tags": ["v1"], "outcome": "built", "finished_at": time.time() if finished_at is None else finished_at,
        **fields,
    })


def test_a_saved_record_reads_back_whole(fake_redis: fakeredis.FakeRedis) -> None:
    settings = make_settings()
    steps = [StepRecord(number=1, name="FROM base", duration_s=0.1, cached=True),
             StepRecord(number=2, name="RUN make", duration_s=3.0, cached=False)]
    saved = record("t1", host="builder-1", steps=steps, duration_s=3.2)
    assert store.save(fake_redis, settings, saved)
    assert store.load(fake_redis, settings, "team-a", "t1") == saved
    assert store.load(fake_redis, settings, "team-a", "t1").steps_cached == 1  # type: ignore[union-attr]


def test_recent_is_newest_first_and_per_team(fake_redis: fakeredis.FakeRedis) -> None:
    settings = make_settings()
    now = time.time()
    for number in range(3):
        store.save(fake_redis, settings, record(f"a{number}", finished_at=now - 10 + number))
    store.save(fake_redis, settings, record("b0", team="team-b", finished_at=now))
    assert [each.id for each in store.recent(fake_redis, settings, ["team-a"])] == ["a2", "a1", "a0"]
    assert [each.id for each in store.recent(fake_redis, settings, ["team-a", "team-b"], limit=2)] == ["b0", "a2"]
    assert [each.id for each in store.recent(fake_redis, settings, ["team-a"], since=now - 9)] == ["a2", "a1"]
    assert store.find(fake_redis, settings, ["team-a", "team-b"], "b0") is not None
    assert store.load(fake_redis, settings, "team-a", "b0") is None  # another team's record is not in team-a's


def test_the_count_bound_keeps_the_newest_and_deletes_the_rest(fake_redis: fakeredis.FakeRedis) -> None:
    settings = make_settings(history_max_records=3)
    now = time.time()
    for number in range(5):
        store.save(fake_redis, settings, record(f"r{number}", finished_at=now - 10 + number))
    assert [each.id for each in store.recent(fake_redis, settings, ["team-a"])] == ["r4", "r3", "r2"]
    assert fake_redis.exists(store.record_key(settings, "team-a", "r0")) == 0


def test_the_age_bound_drops_old_records(fake_redis: fakeredis.FakeRedis) -> None:
    settings = make_settings(history_max_age_s=60)
    now = time.time()
    store.save(fake_redis, settings, record("old", finished_at=now - 120))
    store.save(fake_redis, settings, record("new", finished_at=now))
    assert [each.id for each in store.recent(fake_redis, settings, ["team-a"])] == ["new"]
    assert 0 < fake_redis.ttl(store.record_key(settings, "team-a", "new")) <= 60


def test_a_record_that_does_not_read_is_left_out(fake_redis: fakeredis.FakeRedis) -> None:
    settings = make_settings()
    store.save(fake_redis, settings, record("good"))
    fake_redis.set(store.record_key(settings, "team-a", "bad"), "{not json")
    fake_redis.zadd(store.index_key(settings, "team-a"), {"bad": time.time()})
    assert [each.id for each in store.recent(fake_redis, settings, ["team-a"])] == ["good"]


def test_in_flight_marks_are_listed_until_the_record_is_written(fake_redis: fakeredis.FakeRedis) -> None:
    from dockyard.tasks.history.record import InFlight

    settings = make_settings()
    running = InFlight(id="t9", kind="build", team="team-a", image_name="127.0.0.1:5000/team-a/app",
                       host="builder-1", started_at=time.time())
    assert store.started(fake_redis, settings, running)
    assert store.running_now(fake_redis, settings, ["team-a"]) == [running]
    assert store.running_now(fake_redis, settings, ["team-b"]) == []
    assert store.finished(fake_redis, settings, record("t9"))
    assert store.running_now(fake_redis, settings, ["team-a"]) == []
    assert store.load(fake_redis, settings, "team-a", "t9") is not None
