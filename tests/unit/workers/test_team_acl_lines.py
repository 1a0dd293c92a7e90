"""The teams' ACL lines (``dockyard.workers.redis_acl``): what a team's user may write of its own namespace."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from dockyard.config.teams import load_teams
from dockyard.workers import cli
from dockyard.workers.redis_acl import NO_ANONYMOUS, WORKER_RULES, farm_user, setuser_arguments, store_user
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


ROOT = Path(__file__).resolve().parents[3]


def test_the_workers_user_has_the_rules_provisioning_gives_it() -> None:
    provision = (ROOT / "workers" / "provision.sh").read_text()
    assert f'"$(redis_password worker)") {WORKER_RULES["farm"]}\n' in provision
    assert f'"$(redis_password worker)") {WORKER_RULES["store"]}\n' in provision
    assert NO_ANONYMOUS in provision


def test_a_whole_acl_file_shuts_out_anonymous_clients_and_admits_the_worker_and_the_teams(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    teams = write_teams(tmp_path, {"team-a": []})
    monkeypatch.setenv("COMPOSE_WORKER_PASSWORD", "s3cret")
    assert cli.run(["teams", "acl", "--server", "store", "--teams", teams, "--worker-user", "dockyard-worker",
                    "--worker-password-env", "COMPOSE_WORKER_PASSWORD"]) == 0
    lines = capsys.readouterr().out.splitlines()
    digest = hashlib.sha256(b"s3cret").hexdigest()
    assert lines[0] == NO_ANONYMOUS
    assert lines[1] == f"user dockyard-worker on #{digest} {WORKER_RULES['store']}"
    assert [line.split()[1] for line in lines[2:]] == ["dockyard-team-team-a"]
    assert "s3cret" not in "\n".join(lines)


def test_a_whole_acl_file_needs_the_workers_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    teams = write_teams(tmp_path, {"team-a": []})
    monkeypatch.delenv("COMPOSE_WORKER_PASSWORD", raising=False)
    assert cli.run(["teams", "acl", "--teams", teams, "--worker-user", "w",
                    "--worker-password-env", "COMPOSE_WORKER_PASSWORD"]) == 1
    assert "COMPOSE_WORKER_PASSWORD is unset or empty" in capsys.readouterr().err
    assert cli.run(["teams", "acl", "--teams", teams, "--worker-user", "w"]) == 1
    assert "go together" in capsys.readouterr().err
