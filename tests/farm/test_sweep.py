"""The sweep removes the private directories of dead processes, and only those."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from dockyard.config.settings import Settings
from dockyard.workers import sweep


def dead_pid() -> int:
    """The pid of a process that has ended."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.mark.parametrize("kind", sweep.KINDS)
def test_only_the_directories_of_dead_processes_are_removed(tmp_path: Path, kind: str) -> None:
    dead = tmp_path / f"dockyard-{kind}-{dead_pid()}-abc123"
    live = tmp_path / f"dockyard-{kind}-{os.getpid()}-def456"
    without_pid = tmp_path / f"dockyard-{kind}-ghi789"  # made before names carried the pid
    other = tmp_path / f"something-{kind}-{dead_pid()}-jkl012"
    for directory in (dead, live, without_pid, other):
        directory.mkdir()
        (directory / "file").write_text("x")

    assert sweep.left_behind(tmp_path) == [dead]
    assert sweep.sweep(tmp_path) == [dead]

    assert not dead.exists()
    assert live.exists() and without_pid.exists() and other.exists()
    assert sweep.sweep(tmp_path) == []


def test_a_file_with_such_a_name_is_not_removed(tmp_path: Path) -> None:
    stray = tmp_path / f"dockyard-context-{dead_pid()}-file"
    stray.write_text("not a directory")
    assert sweep.sweep(tmp_path) == []
    assert stray.exists()


def test_the_private_directories_name_the_process_that_made_them(monkeypatch: pytest.MonkeyPatch) -> None:
    from dockyard.tasks.request.build_secrets import materialized_secrets, secrets_binding
    from dockyard.tasks.engine.buildx import private_docker
    from dockyard.tasks.context.pack import private_directory, remove_directory
    from dockyard.tasks.request.sealing import generate_keypair, seal

    context = private_directory()
    try:
        assert sweep.owner_pid(context.name) == os.getpid()
    finally:
        remove_directory(context)
    public, private = generate_keypair()
    with materialized_secrets(seal({"token": "eA=="}, public, ttl_s=60, bound_to=secrets_binding("default")), SecretStr(private), team="default") as entries:
        assert sweep.owner_pid(Path(entries[0].split("src=", 1)[1]).parent.name) == os.getpid()
    with private_docker(Settings(registry_url=None)) as (_client, config_dir):
        assert sweep.owner_pid(config_dir.name) == os.getpid()
