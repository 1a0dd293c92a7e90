"""dockyard.tasks.teams.pushing: the farm's login pushes only to a team's repositories, and a team pushes only images it had."""

from __future__ import annotations

from pathlib import Path

import fakeredis
import pytest

from dockyard.config.settings import Settings
from dockyard.config.teams import Team
from dockyard.tasks.errors import NotPermitted, PushError
from dockyard.tasks.farm import hosts
from dockyard.tasks.teams.pushing import check_owned, check_repository, note_owned, owned_key, sending_team
from tests.unit.support import Clock, make_settings, write_teams

IMAGE = "sha256:" + "a" * 64


def test_a_repository_matching_a_push_pattern_passes() -> None:
    team = Team(name="team-a", push=["reg.io/team-a/*", "reg.io/shared/base"])
    check_repository(team, "reg.io/team-a/app")
    check_repository(team, "reg.io/shared/base")


def test_another_repository_is_refused_naming_the_team_and_its_patterns() -> None:
    team = Team(name="team-a", push=["reg.io/team-a/*", "reg.io/shared/base"])
    with pytest.raises(NotPermitted) as refused:
        check_repository(team, "reg.io/team-b/app")
    assert str(refused.value).startswith(
        "Team team-a may push with the farm's registry login only to reg.io/team-a/*, reg.io/shared/base; "
        "reg.io/team-b/app is not one of them"
    )
    assert isinstance(refused.value, PushError), "a push error: not retried"


def test_a_team_without_patterns_may_push_nowhere_with_the_farms_login() -> None:
    with pytest.raises(NotPermitted, match="only to none; reg.io/team-b/app is not one of them"):
        check_repository(Team(name="team-b"), "reg.io/team-b/app")


def test_the_sending_team_must_be_declared(tmp_path: Path) -> None:
    farm = make_settings(teams_file=write_teams(tmp_path, {"team-a": ["reg.io/team-a/*"]}))
    assert sending_team(farm.model_copy(update={"team": "team-a"})).push == ["reg.io/team-a/*"]
    with pytest.raises(NotPermitted, match="Team default is not declared on this farm"):
        sending_team(farm)


def test_an_image_the_team_never_had_is_refused(fake_redis: fakeredis.FakeRedis, unit_settings: Settings) -> None:
    with pytest.raises(NotPermitted) as refused:
        check_owned(fake_redis, unit_settings, IMAGE, "reg.io/team/app:v1")
    assert f"Team default has no build of image {IMAGE} (reg.io/team/app:v1)" in str(refused.value)


def test_an_image_the_team_had_passes_for_that_team_only(fake_redis: fakeredis.FakeRedis, unit_settings: Settings) -> None:
    note_owned(fake_redis, unit_settings, IMAGE)
    assert owned_key(unit_settings, IMAGE) == f"unit:team:default:owns:{IMAGE}"
    check_owned(fake_redis, unit_settings, IMAGE, "reg.io/team/app:v1")
    other = unit_settings.model_copy(update={"team": "team-b"})
    with pytest.raises(NotPermitted, match="Team team-b has no build of image"):
        check_owned(fake_redis, other, IMAGE, "reg.io/team/app:v1")


def test_ownership_lasts_as_long_as_a_cache_entry(fake_redis: fakeredis.FakeRedis, clock: Clock) -> None:
    settings = make_settings(cache_ttl_s=60)
    note_owned(fake_redis, settings, IMAGE)
    clock.advance(59)
    check_owned(fake_redis, settings, IMAGE, "reg.io/team/app:v1")
    clock.advance(2)
    with pytest.raises(NotPermitted):
        check_owned(fake_redis, settings, IMAGE, "reg.io/team/app:v1")


def test_recording_an_image_gives_the_recording_team_its_ownership(
    fake_redis: fakeredis.FakeRedis, unit_settings: Settings
) -> None:
    theirs = unit_settings.model_copy(update={"team": "team-b"})
    hosts.record_image(fake_redis, theirs, host_id="h1", image_id=IMAGE, references=["reg.io/team/app:v1"])
    check_owned(fake_redis, theirs, IMAGE, "reg.io/team/app:v1")
    with pytest.raises(NotPermitted):
        check_owned(fake_redis, unit_settings, IMAGE, "reg.io/team/app:v1")
    assert hosts.locate_images(fake_redis, unit_settings, ["reg.io/team/app:v1"]) == [None], "its tags are its own"
