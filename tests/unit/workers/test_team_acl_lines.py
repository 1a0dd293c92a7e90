"""The teams' ACL lines (``dockyard.workers.redis_acl``): what a team's user may write of its own namespace."""

from __future__ import annotations

from pathlib import Path

from dockyard.config.teams import load_teams
from dockyard.workers.redis_acl import farm_user, setuser_arguments, store_user
from tests.unit.support import write_teams


def rules(tmp_path: Path, team: str) -> list[str]:
    teams = load_teams(write_teams(tmp_path, {"team-a": [], "team-b": []}))
    _name, found = setuser_arguments(farm_user(teams.teams[team], key_prefix="p:"))
    return found


def test_a_team_writes_its_own_cancel_requests_and_waiting_marks(tmp_path: Path) -> None:
    found = rules(tmp_path, "team-a")
    assert "~p:team:team-a:cancel:*" in found
    assert "~p:team:team-a:waiting:*" in found
    assert "~p:team:team-a:call:*" in found, "its cacheable entries, as before"


def test_a_team_writes_nothing_of_another_teams_namespace(tmp_path: Path) -> None:
    found = rules(tmp_path, "team-b")
    writes = [rule for rule in found if rule.startswith("~")]
    assert writes and all("team-a" not in rule for rule in found)
    assert all(rule.startswith("~p:team:team-b:") or "team:" not in rule for rule in writes)
    assert "%R~p:team:team-b:*" in found, "it reads only its own namespace"
    assert not any(rule.startswith("~p:team:*") or rule == "~*" for rule in found)


def test_the_context_store_user_gains_nothing(tmp_path: Path) -> None:
    teams = load_teams(write_teams(tmp_path, {"team-a": []}))
    line = store_user(teams.teams["team-a"], key_prefix="p:")
    assert "cancel" not in line and "waiting" not in line
