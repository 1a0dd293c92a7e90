"""dockyard.config.teams: the operator's teams file, and the team queues of dockyard.config.settings (no services)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from dockyard.config.settings import Settings, farm_queue, queue_team, team_queue
from dockyard.config.teams import InvalidTeams, Team, default_teams, load_teams, parse_teams
from tests.unit.support import make_settings

SHA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
GOOD = f"""
[teams.team-a]
redis_password_sha256 = ["{SHA}"]
push = ["registry.internal/team-a/*", "registry.internal/shared/base"]
share = 2.5

[teams.b2]
"""


def test_a_good_file_declares_its_teams_by_name() -> None:
    teams = parse_teams(GOOD)
    assert teams.names == ["b2", "team-a"]
    team_a = teams.get("team-a")
    assert team_a == Team(
        name="team-a", redis_password_sha256=[SHA], push=["registry.internal/team-a/*", "registry.internal/shared/base"], share=2.5,
    )
    assert team_a.redis_user == "dockyard-team-team-a"
    b2 = teams.get("b2")
    assert b2 is not None and (b2.push, b2.redis_password_sha256, b2.share) == ([], [], 1.0)
    assert teams.get("team-c") is None and teams.get(None) is None


@pytest.mark.parametrize(
    ("text", "fault"),
    [
        ('[teams."Team.A"]\n', r"teams\.Team\.A\.name: String should match pattern"),
        ("[teams.team-a]\npush = []\nowner = 'me'\n", r"teams\.team-a\.owner: Extra inputs are not permitted"),
        ("[teams.team-a]\n\n[queues]\n", r"unknown table 'queues' \(only \[teams\.<name>\]\)"),
        ("", "declares no team"),
        ("[teams]\n", "declares no team"),
        ("[teams.team-a]\nredis_password_sha256 = ['not-a-digest']\n", r"redis_password_sha256\.0: String should match pattern"),
        ("[teams.team-a]\nshare = 0\n", r"teams\.team-a\.share: Input should be greater than 0"),
        ("[teams.team-a\n", "not TOML"),
    ],
    ids=["bad name", "unknown key", "unknown table", "empty", "no team", "bad digest", "no share", "not toml"],
)
def test_a_bad_file_is_refused_naming_the_file_and_the_fault(text: str, fault: str) -> None:
    with pytest.raises(InvalidTeams, match=f"^/etc/dockyard/teams.toml: .*{fault}"):
        parse_teams(text, source="/etc/dockyard/teams.toml")


@pytest.mark.parametrize(
    ("repository", "allowed"),
    [
        ("registry.internal/team-a/app", True),
        ("registry.internal/team-a/nested/app", True),  # fnmatch's * crosses "/"
        ("registry.internal/shared/base", True),
        ("registry.internal/shared/base2", False),
        ("registry.internal/team-b/app", False),
        ("registry.internal/team-a", False),
        ("other.registry/team-a/app", False),
        ("REGISTRY.INTERNAL/team-a/app", False),  # case matters
    ],
)
def test_the_farms_login_pushes_only_to_the_teams_patterns(repository: str, allowed: bool) -> None:
    team = parse_teams(GOOD).get("team-a")
    assert team is not None and team.may_push_with_farm_login(repository) is allowed


def test_a_team_with_no_push_patterns_pushes_nowhere_with_the_farms_login() -> None:
    team = parse_teams(GOOD).get("b2")
    assert team is not None and not team.may_push_with_farm_login("registry.internal/b2/app")


def test_without_a_file_the_farm_has_one_team_pushing_anywhere() -> None:
    assert load_teams(None) == default_teams()
    (team,) = default_teams().teams.values()
    assert team.name == "default" and team.push == ["*"] and team.may_push_with_farm_login("any.registry/any/repo")
    assert make_settings().declared_teams.names == ["default"]


def test_the_settings_read_the_teams_file(tmp_path: Path) -> None:
    path = tmp_path / "teams.toml"
    path.write_text(GOOD)
    settings = make_settings(teams_file=str(path))
    assert settings.declared_teams.names == ["b2", "team-a"]
    assert settings.team_named("team-a") is not None and settings.team_named("default") is None
    with pytest.raises(InvalidTeams, match=f"DOCKYARD_TEAMS_FILE {tmp_path / 'missing.toml'}: No such file"):
        make_settings(teams_file=str(tmp_path / "missing.toml")).declared_teams


def test_a_callers_team_defaults_to_default_and_is_a_team_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOCKYARD_TEAM", raising=False)
    assert Settings().team == "default"
    monkeypatch.setenv("DOCKYARD_TEAM", "team-a")
    assert Settings().team == "team-a"
    for bad in ("team.a", "team@a", "team:a", "Team", ""):
        with pytest.raises(ValidationError, match="team"):
            Settings(team=bad)


def test_a_teams_queue_is_the_farms_queue_at_the_team() -> None:
    assert team_queue("dockyard.build", "team-a") == "dockyard.build@team-a"
    assert queue_team("dockyard.host.h1.fast@team-a") == "team-a"
    assert queue_team("dockyard.build") is None and queue_team(None) is None and queue_team("dockyard.build@") is None
    assert farm_queue("dockyard.host.h1@team-a") == "dockyard.host.h1" and farm_queue("dockyard.build") == "dockyard.build"


def test_a_host_id_may_not_name_a_team() -> None:
    with pytest.raises(ValidationError, match="may not hold '@'"):
        make_settings(host_id="h1@team-a")


def test_a_build_queue_may_not_name_a_team() -> None:
    with pytest.raises(ValidationError, match="without '@'"):
        make_settings(build_queue="dockyard.build@team-b")
    with pytest.raises(ValidationError, match="non-empty"):
        make_settings(build_queue="")
