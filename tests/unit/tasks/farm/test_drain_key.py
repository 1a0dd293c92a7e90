"""dockyard.tasks.farm.drain: the drain key, the host record's drain fields, a drain's progress (fakeredis)."""

from __future__ import annotations

import json

import fakeredis

from dockyard.config.settings import Settings, fast_queue, host_queue, team_queue
from dockyard.tasks.farm import drain
from dockyard.tasks.farm.hosts import beat, host_key
from tests.unit.support import Clock, make_settings


def record(connection: fakeredis.FakeRedis, settings: Settings, host: str) -> dict[str, object]:
    raw = connection.get(host_key(settings, host))
    assert raw is not None
    found: dict[str, object] = json.loads(raw)
    return found


def test_a_drain_is_kept_without_expiry_until_undrained(fake_redis: fakeredis.FakeRedis, unit_settings: Settings) -> None:
    assert drain.drained(fake_redis, unit_settings, "h1") is None
    made = drain.drain(fake_redis, unit_settings, "h1", by="op@machine")
    assert fake_redis.get("unit:drained:h1") is not None and fake_redis.ttl("unit:drained:h1") == -1
    assert drain.drained(fake_redis, unit_settings, "h1") == made and made["by"] == "op@machine"
    assert drain.drained(fake_redis, unit_settings, "h2") is None, "one host's drain only"
    assert drain.undrain(fake_redis, unit_settings, "h1") is True
    assert drain.drained(fake_redis, unit_settings, "h1") is None
    assert drain.undrain(fake_redis, unit_settings, "h1") is False, "it was not drained"


def test_each_drain_has_its_own_id(fake_redis: fakeredis.FakeRedis, unit_settings: Settings) -> None:
    first = drain.drain(fake_redis, unit_settings, "h1")
    second = drain.drain(fake_redis, unit_settings, "h1")
    assert first["id"] != second["id"] and drain.drained(fake_redis, unit_settings, "h1") == second


def test_an_unreadable_drain_value_still_drains(fake_redis: fakeredis.FakeRedis, unit_settings: Settings) -> None:
    fake_redis.set(drain.drain_key(unit_settings, "h1"), "not json")
    assert drain.drained(fake_redis, unit_settings, "h1") is not None


def test_drains_reads_many_hosts_at_once(fake_redis: fakeredis.FakeRedis, unit_settings: Settings) -> None:
    drain.drain(fake_redis, unit_settings, "h2")
    found = drain.drains(fake_redis, unit_settings, ["h1", "h2"])
    assert found["h1"] is None and found["h2"] is not None
    assert drain.drains(fake_redis, unit_settings, []) == {}


def test_drain_and_undrain_mark_the_live_host_record_at_once_keeping_its_expiry(
    fake_redis: fakeredis.FakeRedis, unit_settings: Settings, clock: Clock
) -> None:
    beat(fake_redis, unit_settings, "h1", {"concurrency": 2})
    ttl = fake_redis.pttl(host_key(unit_settings, "h1"))
    drain.drain(fake_redis, unit_settings, "h1")
    assert record(fake_redis, unit_settings, "h1")["drained"] is True
    assert record(fake_redis, unit_settings, "h1")["concurrency"] == 2, "the rest of the record kept"
    assert 0 < fake_redis.pttl(host_key(unit_settings, "h1")) <= ttl, "its expiry kept"
    drain.undrain(fake_redis, unit_settings, "h1")
    assert record(fake_redis, unit_settings, "h1")["drained"] is False


def test_draining_a_host_that_does_not_heartbeat_makes_no_record(fake_redis: fakeredis.FakeRedis, unit_settings: Settings) -> None:
    drain.drain(fake_redis, unit_settings, "h9")
    assert fake_redis.get(host_key(unit_settings, "h9")) is None, "no immortal record of a dead host"
    assert drain.drained(fake_redis, unit_settings, "h9") is not None, "drained when its worker starts"


def test_record_fields_say_drained_and_name_the_drain_seen() -> None:
    seen = {"id": "abc", "at": 1.0, "by": "op"}
    assert drain.record_fields(seen, consuming_shared=False, running=1, held=2) == {
        "drained": True, "drain": seen, "consuming_shared": False, "running": 1, "held": 2,
    }
    assert drain.record_fields(None, consuming_shared=True, running=0, held=0)["drained"] is False


def heartbeat(connection: fakeredis.FakeRedis, settings: Settings, host: str, **fields: object) -> None:
    current = drain.drained(connection, settings, host)
    values = {"consuming_shared": False, "running": 0, "held": 0, **fields}
    beat(connection, settings, host, {"teams": ["a", "b"], **drain.record_fields(current, **values)})  # type: ignore[arg-type]


def test_progress_is_empty_only_once_the_worker_saw_this_drain_and_holds_nothing(
    fake_redis: fakeredis.FakeRedis, unit_settings: Settings
) -> None:
    heartbeat(fake_redis, unit_settings, "h1", consuming_shared=True)
    made = drain.drain(fake_redis, unit_settings, "h1")
    found = drain.progress(fake_redis, fake_redis, unit_settings, "h1", made["id"])
    assert found.live and not found.seen and not found.empty, "the record was marked, but no beat saw the drain yet"
    heartbeat(fake_redis, unit_settings, "h1", consuming_shared=True, running=1, held=1)
    found = drain.progress(fake_redis, fake_redis, unit_settings, "h1", made["id"])
    assert found.seen and not found.empty and (found.running, found.held) == (1, 1)
    heartbeat(fake_redis, unit_settings, "h1", consuming_shared=False, running=1, held=1)
    assert not drain.progress(fake_redis, fake_redis, unit_settings, "h1", made["id"]).empty, "a build still runs"
    heartbeat(fake_redis, unit_settings, "h1")
    assert drain.progress(fake_redis, fake_redis, unit_settings, "h1", made["id"]).empty
    assert not drain.progress(fake_redis, fake_redis, unit_settings, "h1", "another drain").empty


def test_progress_counts_what_waits_in_the_hosts_own_queues_of_every_team(
    fake_redis: fakeredis.FakeRedis, unit_settings: Settings
) -> None:
    made = drain.drain(fake_redis, unit_settings, "h1")
    heartbeat(fake_redis, unit_settings, "h1")
    fake_redis.lpush(team_queue(host_queue("h1"), "b"), "a push of an image h1 holds")
    fake_redis.lpush(team_queue(fast_queue("h1"), "a"), "a tag")
    fake_redis.lpush(team_queue(host_queue("h2"), "a"), "another host's")
    found = drain.progress(fake_redis, fake_redis, unit_settings, "h1", made["id"])
    assert found.queued == 2 and not found.empty
    fake_redis.delete(team_queue(host_queue("h1"), "b"), team_queue(fast_queue("h1"), "a"))
    assert drain.progress(fake_redis, fake_redis, unit_settings, "h1", made["id"]).empty


def test_a_host_that_stopped_heartbeating_is_not_live(fake_redis: fakeredis.FakeRedis) -> None:
    settings = make_settings()
    made = drain.drain(fake_redis, settings, "h1")
    found = drain.progress(fake_redis, fake_redis, settings, "h1", made["id"])
    assert not found.live and not found.empty
