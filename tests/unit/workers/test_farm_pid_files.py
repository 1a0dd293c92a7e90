"""dockyard.workers.farm: pid files keep who started each worker, and `dockyard down` chooses by it."""

from __future__ import annotations

from pathlib import Path

from dockyard.workers.farm import PidFile, chosen_pid_files, farm_identity, pid_file_text, read_pid_file
from tests.unit.support import make_settings

MINE = {"checkout": "/src/a", "key_prefix": "dockyard:"}
THEIRS = {"checkout": "/src/b", "key_prefix": "dockyard:"}


def test_a_pid_file_keeps_the_pid_and_the_farm_and_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "h1.pid"
    path.write_text(pid_file_text(123, MINE))
    assert read_pid_file(path) == PidFile("h1", 123, MINE)


def test_an_older_pid_file_is_a_pid_of_no_farm_and_garbage_is_none(tmp_path: Path) -> None:
    (tmp_path / "old.pid").write_text("456\n")
    assert read_pid_file(tmp_path / "old.pid") == PidFile("old", 456, None)
    (tmp_path / "bad.pid").write_text("{not json")
    assert read_pid_file(tmp_path / "bad.pid") is None
    assert read_pid_file(tmp_path / "missing.pid") is None


def test_down_chooses_its_own_farms_workers_unless_told_hosts_or_all() -> None:
    found = [PidFile("a1", 1, MINE), PidFile("b1", 2, THEIRS), PidFile("old", 3, None), PidFile("a2", 4, {**MINE, "key_prefix": "x:"})]
    assert [each.host_id for each in chosen_pid_files(found, MINE)] == ["a1"]
    assert [each.host_id for each in chosen_pid_files(found, MINE, hosts=["b1", "old"])] == ["b1", "old"]
    assert [each.host_id for each in chosen_pid_files(found, MINE, every=True)] == ["a1", "b1", "old", "a2"]


def test_the_identity_is_the_checkout_and_the_key_prefix() -> None:
    assert farm_identity(make_settings(key_prefix="p:"), checkout="/src/a") == {"checkout": "/src/a", "key_prefix": "p:"}
