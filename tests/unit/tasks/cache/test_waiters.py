"""Waiting marks (``dockyard.tasks.cache.waiters``): who waits for a build key, in each team's namespace."""

from __future__ import annotations

from pathlib import Path

import fakeredis

from dockyard.tasks.cache.waiters import Waiting, mark_ttl_s, others_waiting, waiting_key
from tests.unit.support import Clock, make_settings, write_teams


def test_a_mark_lives_while_its_call_waits_and_goes_when_it_stops(fake_redis: fakeredis.FakeRedis) -> None:
    settings = make_settings(team="team-a")
    assert waiting_key(settings, "k") == "unit:team:team-a:waiting:k"
    with Waiting(fake_redis, settings, "k"):
        assert fake_redis.zcard("unit:team:team-a:waiting:k") == 1
        assert others_waiting(fake_redis, settings, "k") == 1
        assert 0 < fake_redis.ttl("unit:team:team-a:waiting:k") <= mark_ttl_s(settings) + 1
    assert others_waiting(fake_redis, settings, "k") == 0
    assert not fake_redis.exists("unit:team:team-a:waiting:k")


def test_marks_of_every_declared_team_count(fake_redis: fakeredis.FakeRedis, tmp_path: Path) -> None:
    teams = write_teams(tmp_path, {"team-a": [], "team-b": []})
    a, b = make_settings(team="team-a", teams_file=teams), make_settings(team="team-b", teams_file=teams)
    with Waiting(fake_redis, a, "k"), Waiting(fake_redis, b, "k"), Waiting(fake_redis, b, "other"):
        assert others_waiting(fake_redis, a, "k") == 2, "a build is shared across teams: so are its waiters"
        assert others_waiting(fake_redis, b, "other") == 1


def test_a_mark_its_call_no_longer_renews_lapses(fake_redis: fakeredis.FakeRedis, clock: Clock) -> None:
    settings = make_settings()
    mark = Waiting(fake_redis, settings, "k").__enter__()  # a waiter that died: never left
    assert others_waiting(fake_redis, settings, "k") == 1
    clock.advance(mark_ttl_s(settings) + 0.5)
    assert others_waiting(fake_redis, settings, "k") == 0


def test_renewing_in_a_loop_writes_once_a_third_of_the_marks_life(fake_redis: fakeredis.FakeRedis, clock: Clock) -> None:
    settings = make_settings()
    with Waiting(fake_redis, settings, "k") as mark:
        first = fake_redis.zscore(mark.name, mark.member)
        mark.renew()
        assert fake_redis.zscore(mark.name, mark.member) == first, "too soon: no write"
        clock.advance(mark.ttl_s / 3 + 0.1)
        mark.renew()
        assert fake_redis.zscore(mark.name, mark.member) > first  # type: ignore[operator]


def test_a_caller_that_may_not_write_its_mark_still_waits() -> None:
    class Refusing(fakeredis.FakeRedis):
        def pipeline(self, *args: object, **kwargs: object) -> object:
            raise_on = super().pipeline(*args, **kwargs)  # type: ignore[arg-type]

            def execute(*_args: object, **_kwargs: object) -> object:
                import redis

                raise redis.exceptions.NoPermissionError("NOPERM this user has no permissions")

            raise_on.execute = execute  # type: ignore[method-assign]
            return raise_on

    connection = Refusing(server=fakeredis.FakeServer())
    with Waiting(connection, make_settings(), "k") as mark:
        mark.renew()  # best effort: no error
