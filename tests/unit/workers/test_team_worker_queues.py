"""dockyard.workers.worker: a worker consumes each declared team's queues (no services)."""

from __future__ import annotations

from pathlib import Path

from dockyard.config.settings import team_queues
from dockyard.workers.worker import fast_worker_argv, worker_argv
from tests.unit.support import make_settings, write_teams


def queues_of(argv: list[str]) -> list[str]:
    return argv[argv.index("--queues") + 1].split(",")


def test_a_worker_takes_the_shared_and_host_queue_of_every_declared_team(tmp_path: Path) -> None:
    settings = make_settings(host_id="h1", teams_file=write_teams(tmp_path, {"team-b": [], "team-a": []}))
    assert queues_of(worker_argv(settings)) == [
        "dockyard.build@team-a", "dockyard.build@team-b", "dockyard.host.h1@team-a", "dockyard.host.h1@team-b",
    ]
    assert queues_of(worker_argv(settings, extra_queues=["extra"]))[-1] == "extra", "extra queues as given"
    assert queues_of(fast_worker_argv(settings)) == ["dockyard.host.h1.fast@team-a", "dockyard.host.h1.fast@team-b"]


def test_a_farm_without_a_teams_file_consumes_the_default_teams_queues() -> None:
    settings = make_settings(host_id="h1")
    assert queues_of(worker_argv(settings)) == ["dockyard.build@default", "dockyard.host.h1@default"]
    assert team_queues(settings, "pool") == ["pool@default"]
