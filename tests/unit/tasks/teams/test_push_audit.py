"""dockyard.tasks.teams.audit: every answered push in one stream, read by team and time, bounded (fakeredis)."""

from __future__ import annotations

from typing import Any

import fakeredis

from dockyard.config.settings import Settings
from dockyard.tasks.teams.audit import audit_key, read_audit, record_push
from tests.unit.support import Clock, make_settings

DIGEST = "sha256:" + "d" * 64


def result(name: str = "reg.io/team-a/app", **fields: Any) -> dict[str, Any]:
    """A push's result as the worker answers it."""
    return {"image_name": name, "tag": "v1", "additional_tags": ["latest"], "digest": DIGEST, "host": "h2", "cache": "built", **fields}


def test_a_push_is_recorded_with_what_was_pushed_and_how(fake_redis: fakeredis.FakeRedis, unit_settings: Settings, clock: Clock) -> None:
    record_push(fake_redis, unit_settings.model_copy(update={"team": "team-a"}), result(), login="farm")
    (entry,) = read_audit(fake_redis, unit_settings)
    assert (entry.team, entry.repository, entry.tags, entry.digest, entry.host, entry.login, entry.cache) == (
        "team-a", "reg.io/team-a/app", ["v1", "latest"], DIGEST, "h2", "farm", "built",
    )
    assert entry.at == clock.now and entry.id.startswith(f"{int(clock.now * 1000)}-"), "the stream's id is the time"
    assert entry.as_json()["team"] == "team-a"
    assert audit_key(unit_settings) == "unit:audit:pushes" and fake_redis.xlen("unit:audit:pushes") == 1


def test_a_push_without_a_tag_or_digest_is_recorded_as_latest_without_digest(
    fake_redis: fakeredis.FakeRedis, unit_settings: Settings
) -> None:
    record_push(fake_redis, unit_settings, {"image_name": "reg.io/x/app", "cache": "hit"}, login="team")
    (entry,) = read_audit(fake_redis, unit_settings)
    assert (entry.tags, entry.digest, entry.host, entry.login) == (["latest"], None, "h1", "team")


def test_the_audit_is_read_by_team_and_from_a_time(fake_redis: fakeredis.FakeRedis, unit_settings: Settings, clock: Clock) -> None:
    team_a, team_b = (unit_settings.model_copy(update={"team": team}) for team in ("team-a", "team-b"))
    record_push(fake_redis, team_a, result(tag="a1"), login="farm")
    clock.advance(10)
    middle = clock.now
    record_push(fake_redis, team_b, result("reg.io/team-b/app", tag="b1"), login="team")
    clock.advance(10)
    record_push(fake_redis, team_a, result(tag="a2"), login="farm")
    assert [entry.tags[0] for entry in read_audit(fake_redis, unit_settings)] == ["a1", "b1", "a2"], "oldest first"
    assert [entry.tags[0] for entry in read_audit(fake_redis, unit_settings, team="team-a")] == ["a1", "a2"]
    assert [entry.tags[0] for entry in read_audit(fake_redis, unit_settings, team="team-b")] == ["b1"]
    assert read_audit(fake_redis, unit_settings, team="team-c") == []
    assert [entry.tags[0] for entry in read_audit(fake_redis, unit_settings, since=middle)] == ["b1", "a2"]
    assert [entry.tags[0] for entry in read_audit(fake_redis, unit_settings, team="team-a", since=middle)] == ["a2"]
    assert [entry.tags[0] for entry in read_audit(fake_redis, unit_settings, limit=2)] == ["b1", "a2"], "the newest"


def test_the_stream_keeps_at_most_its_entries(fake_redis: fakeredis.FakeRedis) -> None:
    settings = make_settings(audit_max_entries=5)
    for n in range(300):
        record_push(fake_redis, settings, result(tag=f"v{n}"), login="farm")
    kept = read_audit(fake_redis, settings, limit=1000)
    # trimmed as pushes arrive, approximately: Redis drops whole nodes of its stream (stream-node-max-entries, 100)
    assert settings.audit_max_entries <= len(kept) == fake_redis.xlen(audit_key(settings)) <= settings.audit_max_entries + 100
    assert kept[-1].tags[0] == "v299", "the newest kept"


def test_the_stream_drops_entries_older_than_its_age(fake_redis: fakeredis.FakeRedis, clock: Clock) -> None:
    settings = make_settings(audit_max_age_s=60)
    for n in range(200):
        record_push(fake_redis, settings, result(tag=f"old{n}"), login="farm")
    clock.advance(61)
    record_push(fake_redis, settings, result(tag="new"), login="farm")
    kept = [entry.tags[0] for entry in read_audit(fake_redis, settings)]
    assert kept[-1] == "new" and len(kept) <= 101, "entries past the age are trimmed (approximately: whole nodes of 100)"
