"""dockyard.workers.drain_commands and the drain columns of ``dockyard hosts``: waiting until a host is empty (no services)."""

from __future__ import annotations

from typing import Any

import pytest

from dockyard.tasks.farm.drain import Progress
from dockyard.workers import cli, drain_commands
from dockyard.workers.drain_commands import BadHostId, DrainTimeout, check_host_id, wait_empty


def progress(seen_at: float, *, live: bool = True, held: int = 0, queued: int = 0, shared: bool | None = False) -> Progress:
    return Progress("h1", live, True, shared, running=min(held, 1), held=held, queued=queued, seen_at=seen_at)


def reader(*steps: Progress) -> Any:
    found = iter(steps)
    return lambda: next(found)


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(drain_commands.time, "sleep", lambda _s: None)


def test_empty_needs_two_heartbeats_in_a_row() -> None:
    lines: list[str] = []
    found, _waited = wait_empty(
        reader(progress(1.0, held=1), progress(2.0), progress(2.0), progress(3.0, queued=1), progress(4.0), progress(5.0)),
        timeout_s=60, every_s=0, report=lines.append,
    )
    assert found.seen_at == 5.0, "the same record twice is one heartbeat; work seen in between starts again"
    assert lines[0].startswith("draining h1: 1 running, 1 held, 0 queued") and len(lines) == 4


def test_a_host_that_stops_heartbeating_ends_the_wait() -> None:
    found, _waited = wait_empty(reader(progress(1.0, held=1), progress(0, live=False)), timeout_s=60, every_s=0,
                                report=lambda _line: None)
    assert not found.live


def test_a_host_still_busy_at_the_timeout_is_an_error_saying_it_stays_drained() -> None:
    with pytest.raises(DrainTimeout, match=r"host h1 still holds work after 0 s \(1 running, 1 held.*it stays drained"):
        wait_empty(lambda: progress(1.0, held=1), timeout_s=0, every_s=0, report=lambda _line: None)


@pytest.mark.parametrize("name", ["", "h*", "a b", "h1@team-a", "h1.fast", " h1"])
def test_a_name_no_host_can_have_is_refused(name: str) -> None:
    with pytest.raises(BadHostId):
        check_host_id(name)


def test_check_host_id_takes_a_host_id_as_given() -> None:
    assert check_host_id("test-host-1-ab12cd") == "test-host-1-ab12cd"


def test_hosts_show_the_heartbeat_age_and_the_drain_state() -> None:
    drain = {"id": "d1", "at": 1.0, "by": "op"}
    records = [
        {"host": "h1", "seen_at": 98.0, "drain": None, "consuming_shared": True, "held": 1},
        {"host": "h2", "seen_at": 99.5, "drain": {"id": "old"}, "consuming_shared": True, "held": 0},
        {"host": "h3", "seen_at": 99.5, "drain": drain, "consuming_shared": False, "held": 1},
        {"host": "h4", "seen_at": 99.5, "drain": drain, "consuming_shared": False, "held": 0},
        {"host": "h5", "seen_at": 99.5, "drain": drain, "consuming_shared": False, "held": 0},
    ]
    drains = {"h1": None, "h2": drain, "h3": drain, "h4": drain, "h5": drain}
    rows = {row["host"]: row for row in cli.host_rows(records, {}, {}, drains=drains, queued={"h5": 1}, now=100.0)}
    assert rows["h1"]["heartbeat_age_s"] == 2.0 and rows["h1"]["state"] == "active" and not rows["h1"]["drained"]
    assert rows["h2"]["state"] == "draining", "its worker has not seen this drain yet"
    assert rows["h3"]["state"] == "draining", "it still holds a message"
    assert rows["h5"]["state"] == "draining" and rows["h5"]["queued"] == 1, "something waits in its own queue"
    assert rows["h4"]["state"] == "drained" and rows["h4"]["drained"] and rows["h4"]["drain"] == drain
