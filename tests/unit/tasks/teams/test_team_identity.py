"""dockyard.tasks.teams.identity: a task's team is the team of the queue its message came from, never a field of it."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from celery import Celery

from dockyard.config.settings import Settings
from dockyard.tasks.errors import InvalidInput
from dockyard.tasks.teams.identity import current_team, for_team, request_team, sending_settings, task_settings, verified_team
from tests.unit.support import make_settings, write_teams


def came_from(routing_key: object, **info: object) -> SimpleNamespace:
    """A received task's request, its delivery_info stamped by the worker's transport."""
    return SimpleNamespace(delivery_info={"exchange": "", "routing_key": routing_key, **info})


@pytest.fixture
def farm(tmp_path: Path) -> Settings:
    return make_settings(teams_file=write_teams(tmp_path, {"team-a": ["reg.io/team-a/*"], "team-b": []}))


def test_the_team_of_a_request_is_the_team_of_its_queue() -> None:
    assert request_team(came_from("dockyard.build@team-a")) == "team-a"
    assert request_team(came_from("dockyard.host.h1.fast@team-b")) == "team-b"
    assert request_team(came_from("dockyard.build")) is None
    assert request_team(came_from(None)) is None
    assert request_team(SimpleNamespace(delivery_info=None)) is None
    assert request_team(SimpleNamespace()) is None
    assert request_team(SimpleNamespace(delivery_info="dockyard.build@team-a")) is None, "not a mapping"


def test_a_field_of_the_message_does_not_make_its_team() -> None:
    """Only the queue says: a sender may write anything else into its message."""
    request = came_from("dockyard.build@team-b", team="team-a")
    request.team = "team-a"
    request.kwargs = {"team": "team-a"}
    assert request_team(request) == "team-b"
    unstamped = came_from("dockyard.build", team="team-a")
    unstamped.team = "team-a"
    unstamped.kwargs = {"team": "team-a"}
    assert request_team(unstamped) is None


def test_a_declared_teams_queue_gives_that_team(farm: Settings) -> None:
    team = verified_team(came_from("dockyard.host.h1@team-a"), farm)
    assert team.name == "team-a" and team.push == ["reg.io/team-a/*"]
    assert task_settings(came_from("dockyard.build@team-b"), farm).team == "team-b"


@pytest.mark.parametrize(
    "routing_key", ["dockyard.build@team-c", "dockyard.build@default", "dockyard.build", "dockyard.build@", None],
)
def test_a_queue_of_no_declared_team_is_refused(farm: Settings, routing_key: str | None) -> None:
    with pytest.raises(InvalidInput, match=r"belongs to no team declared on this farm \(declared: team-a, team-b\)") as refused:
        verified_team(came_from(routing_key), farm)
    assert repr(routing_key) in str(refused.value), "the message names the queue"
    with pytest.raises(InvalidInput, match="belongs to no team"):
        task_settings(came_from(routing_key), farm)


def test_a_farm_without_a_teams_file_takes_the_default_teams_queues_only() -> None:
    settings = make_settings()
    assert verified_team(came_from("dockyard.build@default"), settings).name == "default"
    with pytest.raises(InvalidInput, match=r"\(declared: default\)"):
        verified_team(came_from("dockyard.build@team-a"), settings)


def test_a_tasks_settings_are_a_copy_for_its_team(farm: Settings) -> None:
    mine = task_settings(came_from("dockyard.build@team-a"), farm)
    assert mine.team == "team-a" and farm.team == "default", "the worker's own settings are untouched"
    assert mine.model_dump(exclude={"team"}) == farm.model_dump(exclude={"team"})
    assert for_team(farm, "team-a") is mine, "one copy per settings object and team"
    assert for_team(mine, "team-a") is mine
    assert for_team(farm, "default") is farm


def test_outside_a_task_messages_are_sent_with_the_callers_own_settings() -> None:
    caller = make_settings(team="team-b")
    assert sending_settings(caller) is caller


def test_inside_a_task_messages_are_sent_for_the_tasks_team() -> None:
    """A task's own sends (a forwarded tag, a hand-over) route for the team of the message it runs."""
    caller = make_settings()
    app = Celery("unit-identity")

    @app.task
    def sends() -> tuple[str | None, str]:
        return current_team(), sending_settings(caller).team

    assert sends.apply(routing_key="dockyard.host.h1@team-b").get() == ("team-b", "team-b")
    assert sends.apply(routing_key="dockyard.build").get() == (None, "default")
    assert current_team() is None, "no task runs here"
