"""dockyard.tasks.teams.caps: a team's running set with leases, builds over the cap parked and released (fakeredis)."""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path
from typing import Any

import fakeredis
import pytest

from dockyard.config.settings import Settings
from dockyard.config.teams import load_teams
from dockyard.tasks.teams import caps
from dockyard.workers.redis_acl import farm_user
from tests.unit.support import Clock, make_settings

TEAM = "team-a"


class Sent:
    """A publisher that records what it sends (or fails, when told)."""

    def __init__(self) -> None:
        self.signatures: list[dict[str, Any]] = []
        self.fail = False

    def __call__(self, signature: Any) -> None:
        if self.fail:
            raise ConnectionError("the broker is away")
        self.signatures.append(dict(signature))

    @property
    def ids(self) -> list[str]:
        return [each["options"]["task_id"] for each in self.signatures]


def park(connection: fakeredis.FakeRedis, settings: Settings, task_id: str, queue: str = f"dockyard.build@{TEAM}") -> None:
    signature = {"task": "dockyard.build_docker_image", "kwargs": {"spec": {}}, "options": {"task_id": task_id, "queue": queue}}
    caps.park(connection, settings, TEAM, task_id, queue, signature)


def test_a_team_holds_at_most_its_cap_of_slots_and_an_ended_build_frees_one(
    fake_redis: fakeredis.FakeRedis, unit_settings: Settings
) -> None:
    assert caps.acquire(fake_redis, unit_settings, TEAM, "t1", 2)
    assert caps.acquire(fake_redis, unit_settings, TEAM, "t2", 2)
    assert not caps.acquire(fake_redis, unit_settings, TEAM, "t3", 2), "at the cap"
    assert caps.acquire(fake_redis, unit_settings, "team-b", "b1", 2), "another team's cap is its own"
    assert caps.acquire(fake_redis, unit_settings, TEAM, "t1", 2), "a slot held is kept (a duplicate of the same task)"
    caps.finish(fake_redis, unit_settings, TEAM, "t1")
    assert caps.acquire(fake_redis, unit_settings, TEAM, "t3", 2)
    assert sorted(caps.running(fake_redis, unit_settings, TEAM)) == ["t2", "t3"]


def test_the_slot_of_a_dead_workers_build_expires_with_its_lease_unless_renewed(
    fake_redis: fakeredis.FakeRedis, unit_settings: Settings, clock: Clock
) -> None:
    assert caps.acquire(fake_redis, unit_settings, TEAM, "alive", 2)
    assert caps.acquire(fake_redis, unit_settings, TEAM, "dead", 2)
    for _ in range(3):  # the live build renews every third of its lease; the dead one never does
        clock.advance(unit_settings.lease_s / 2)
        caps.renew(fake_redis, unit_settings, TEAM, "alive")
    assert caps.acquire(fake_redis, unit_settings, TEAM, "next", 2), "the dead build's slot expired"
    assert sorted(caps.running(fake_redis, unit_settings, TEAM)) == ["alive", "next"]


def test_parked_builds_are_released_oldest_first_one_per_free_slot_and_keep_their_slot(
    fake_redis: fakeredis.FakeRedis, unit_settings: Settings
) -> None:
    sent = Sent()
    for task_id in ("r1", "r2"):
        caps.acquire(fake_redis, unit_settings, TEAM, task_id, 2)
    for task_id in ("p1", "p2", "p3"):
        park(fake_redis, unit_settings, task_id)
    assert caps.release(fake_redis, unit_settings, TEAM, 2, sent) == 0, "no free slot: nothing released"
    caps.finish(fake_redis, unit_settings, TEAM, "r1")
    assert caps.release(fake_redis, unit_settings, TEAM, 2, sent) == 1
    assert sent.ids == ["p1"] and caps.parked(fake_redis, unit_settings, TEAM) == 2
    assert not caps.acquire(fake_redis, unit_settings, TEAM, "newcomer", 2), "the released build's reservation holds its slot"
    assert caps.acquire(fake_redis, unit_settings, TEAM, "p1", 2), "the released build takes its reserved slot"
    caps.finish(fake_redis, unit_settings, TEAM, "r2")
    caps.finish(fake_redis, unit_settings, TEAM, "p1")
    assert caps.release(fake_redis, unit_settings, TEAM, 2, sent) == 2
    assert sent.ids == ["p1", "p2", "p3"] and caps.parked(fake_redis, unit_settings, TEAM) == 0


def test_a_reservation_whose_build_never_arrives_expires(
    fake_redis: fakeredis.FakeRedis, unit_settings: Settings, clock: Clock
) -> None:
    park(fake_redis, unit_settings, "p1")
    assert caps.release(fake_redis, unit_settings, TEAM, 1, Sent()) == 1
    assert not caps.acquire(fake_redis, unit_settings, TEAM, "other", 1)
    clock.advance(caps.RESERVATION_S + 1)
    assert caps.acquire(fake_redis, unit_settings, TEAM, "other", 1)


def test_a_build_that_could_not_be_sent_again_stays_parked(fake_redis: fakeredis.FakeRedis, unit_settings: Settings) -> None:
    park(fake_redis, unit_settings, "p1")
    sent = Sent()
    sent.fail = True
    with pytest.raises(ConnectionError):
        caps.release(fake_redis, unit_settings, TEAM, 1, sent)
    assert caps.parked(fake_redis, unit_settings, TEAM) == 1, "never lost"
    assert not fake_redis.exists(caps.releasing_key(unit_settings, TEAM)), "the lock is given back"
    sent.fail = False
    caps.finish(fake_redis, unit_settings, TEAM, "p1")  # its reservation (a real one would expire)
    assert caps.release(fake_redis, unit_settings, TEAM, 1, sent) == 1 and sent.ids == ["p1"]


def test_one_worker_releases_a_teams_builds_at_a_time(fake_redis: fakeredis.FakeRedis, unit_settings: Settings) -> None:
    park(fake_redis, unit_settings, "p1")
    fake_redis.set(caps.releasing_key(unit_settings, TEAM), "another worker")
    assert caps.release(fake_redis, unit_settings, TEAM, 1, Sent()) == 0
    assert caps.parked(fake_redis, unit_settings, TEAM) == 1


def test_a_build_parked_from_the_queue_of_a_host_that_is_gone_goes_to_the_teams_shared_queue(
    fake_redis: fakeredis.FakeRedis, unit_settings: Settings
) -> None:
    park(fake_redis, unit_settings, "p1", queue=f"dockyard.host.alive@{TEAM}")
    sent = Sent()
    assert caps.release(fake_redis, unit_settings, TEAM, 2, sent) == 1
    assert sent.signatures[0]["options"]["queue"] == f"dockyard.host.alive@{TEAM}", "sent as parked: the sender picks the queue"
    assert json.loads(json.dumps(sent.signatures)) == sent.signatures, "what is sent again is plain JSON"
    alive = {"alive"}.__contains__
    assert caps.queue_after(f"dockyard.host.alive@{TEAM}", unit_settings, alive=alive) == f"dockyard.host.alive@{TEAM}"
    assert caps.queue_after(f"dockyard.host.gone@{TEAM}", unit_settings, alive=alive) == f"dockyard.build@{TEAM}"
    assert caps.queue_after(f"dockyard.build@{TEAM}", unit_settings, alive=alive) == f"dockyard.build@{TEAM}"


def test_the_heartbeat_releases_only_capped_teams_from_the_teams_file(
    fake_redis: fakeredis.FakeRedis, tmp_path: Path
) -> None:
    path = tmp_path / "teams.toml"
    path.write_text(f"[teams.{TEAM}]\nmax_running = 1\n\n[teams.team-b]\nshare = 2\n")
    settings = make_settings(teams_file=str(path))
    assert caps.capped_teams(settings) == {TEAM: 1}
    assert load_teams(str(path)).teams["team-b"].max_running is None
    park(fake_redis, settings, "p1")
    sent = Sent()
    assert caps.release_all(fake_redis, settings, sent, slots=lambda: 4) == 1 and sent.ids == ["p1"]


def two_teams(tmp_path: Path, body: str = "") -> Path:
    path = tmp_path / f"teams-{len(list(tmp_path.iterdir()))}.toml"  # a file of its own: teams files are read once
    path.write_text(f"[teams.{TEAM}]\n{body}\n[teams.team-b]\n")
    return path


def test_with_several_teams_a_team_runs_at_most_the_pools_slots_but_the_others_reserve(tmp_path: Path) -> None:
    settings = make_settings(teams_file=str(two_teams(tmp_path)), fair_reserve_fraction=0.167)
    team = settings.declared_teams.teams[TEAM]
    assert caps.may_park(settings) and not caps.capped_teams(settings)
    assert caps.team_cap(settings, team, slots=lambda: 6) == 5, "1 of 6 slots kept for the other teams"
    assert caps.team_cap(settings, team, slots=lambda: 12) == 10
    assert caps.team_cap(settings, team, slots=lambda: 4) is None, "a pool too small to keep a slot keeps none"
    assert caps.team_cap(make_settings(teams_file=settings.teams_file), team, slots=lambda: 6) == 5, "the reserve is the default"
    assert caps.team_cap(make_settings(teams_file=settings.teams_file, fair_reserve_fraction=0), team, slots=lambda: 6) is None


def test_the_reserve_and_max_running_take_the_smaller_and_fair_share_off_keeps_no_reserve(tmp_path: Path) -> None:
    capped = make_settings(teams_file=str(two_teams(tmp_path, "max_running = 3")), fair_reserve_fraction=0.167)
    assert caps.team_cap(capped, capped.declared_teams.teams[TEAM], slots=lambda: 6) == 3
    wide = make_settings(teams_file=str(two_teams(tmp_path, "max_running = 9")), fair_reserve_fraction=0.167)
    assert caps.team_cap(wide, wide.declared_teams.teams[TEAM], slots=lambda: 6) == 5
    off = make_settings(teams_file=str(two_teams(tmp_path)), fair_share=False, fair_reserve_fraction=0.167)
    assert caps.team_cap(off, off.declared_teams.teams[TEAM], slots=lambda: 6) is None and not caps.may_park(off)
    alone = make_settings(fair_reserve_fraction=0.167)  # one team (default): nobody to keep slots for
    assert caps.team_cap(alone, alone.declared_teams.teams["default"], slots=lambda: 6) is None


def test_a_team_whose_cap_is_gone_gets_its_parked_builds_back(fake_redis: fakeredis.FakeRedis, tmp_path: Path) -> None:
    settings = make_settings(teams_file=str(two_teams(tmp_path)), fair_reserve_fraction=0.167)
    park(fake_redis, settings, "p1")
    park(fake_redis, settings, "p2")
    sent = Sent()
    assert caps.release_all(fake_redis, settings, sent, slots=lambda: 2) == 2 and sent.ids == ["p1", "p2"]


def test_no_teams_redis_user_may_read_or_write_the_running_set_or_the_parked_builds(unit_settings: Settings) -> None:
    teams = load_teams(None)
    line = farm_user(teams.teams["default"], key_prefix=unit_settings.key_prefix)
    patterns = [word.lstrip("(").rstrip(")").split("~", 1)[1] for word in line.split() if "~" in word]
    for key in (caps.running_key(unit_settings, TEAM), caps.parked_key(unit_settings, TEAM), caps.releasing_key(unit_settings, TEAM)):
        assert not [pattern for pattern in patterns if fnmatch.fnmatchcase(key, pattern)], key


def test_a_pool_never_releases_or_counts_another_pools_builds(tmp_path: Path, fake_redis: fakeredis.FakeRedis) -> None:
    """Pools (build queues) have teams files of their own: a pool where the team has no cap must not
    send the parked builds of a pool where it has one."""
    capped_pool = make_settings(teams_file=str(two_teams(tmp_path, "max_running = 1")), build_queue="pool-capped")
    open_pool = make_settings(teams_file=str(two_teams(tmp_path)), build_queue="pool-open", fair_reserve_fraction=0)
    assert caps.acquire(fake_redis, capped_pool, TEAM, "running-1", 1)
    park(fake_redis, capped_pool, "parked-1", queue=f"pool-capped@{TEAM}")
    sent = Sent()
    assert caps.release_all(fake_redis, open_pool, sent, slots=lambda: 4) == 0 and sent.ids == []
    assert caps.parked(fake_redis, capped_pool, TEAM) == 1 and caps.parked(fake_redis, open_pool, TEAM) == 0
    assert caps.running(fake_redis, open_pool, TEAM) == [] and caps.running(fake_redis, capped_pool, TEAM) == ["running-1"]
