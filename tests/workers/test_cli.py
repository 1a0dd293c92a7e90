"""Each CLI command against the real farm: its output and its exit code."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tasks import client
from tests.conftest import Registry, WorkerProcess

TIMEOUT_S = 120
COMMANDS = ["up", "down", "hosts", "cache", "status", "worker", "build", "push"]


def dockyard(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", *args], capture_output=True, text=True, timeout=TIMEOUT_S
    )


@pytest.mark.parametrize("command", [[], *[[c] for c in COMMANDS], ["cache", "list"], ["cache", "clear"]])
def test_every_command_has_help(command: list[str]) -> None:
    shown = dockyard(*command, "--help")
    assert shown.returncode == 0 and "usage: dockyard" in shown.stdout
    assert len(shown.stdout.splitlines()) > 2


def test_hosts_lists_the_live_hosts_with_their_load(farm_workers: list[WorkerProcess]) -> None:
    listed = dockyard("hosts")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split("\t")[:3] == ["HOST", "RUNNING", "CONCURRENCY"]
    rows = {line.split("\t")[0]: line.split("\t") for line in lines[1:]}
    for worker in farm_workers:
        assert worker.host_id in rows
        assert rows[worker.host_id][1].isdigit() and rows[worker.host_id][2] == "2"
        assert rows[worker.host_id][5].startswith("http://127.0.0.1:")


def test_build_push_cache_and_status(project: Path, repo: str, registry: Registry, farm_workers: list[WorkerProcess]) -> None:
    (project / "Dockerfile").write_text(
        (project / "Dockerfile").read_text() + f"RUN echo cli-{uuid.uuid4().hex[:6]}\n"
    )
    built = dockyard("build", repo, "--path", str(project), "--tag", "cli", "--additional-tag", "cli2")
    assert built.returncode == 0, built.stderr
    result = json.loads(built.stdout)
    assert result["image"] == f"{repo}:cli" and result["additional_tags"] == ["cli2"]
    assert "Step 1/" in built.stderr, "build output is shown live"

    pushed = dockyard("push", repo, "--tag", "cli", "--additional-tag", "cli2")
    assert pushed.returncode == 0, pushed.stderr
    assert json.loads(pushed.stdout)["digest"] == registry.manifest_digest(repo.removeprefix(registry.url + "/"), "cli")

    listed = dockyard("cache", "list")
    assert listed.returncode == 0
    rows = [line.split("\t") for line in listed.stdout.splitlines()[1:]]
    mine = [row for row in rows if row[1] == result["image_id"]]
    assert mine and mine[0][2] == result["host"]
    cleared = dockyard("cache", "clear", mine[0][0])
    assert cleared.returncode == 0 and cleared.stdout.strip() == "cleared 1 cache entry"
    assert all(row[0] != mine[0][0] for row in (line.split("\t") for line in dockyard("cache", "list").stdout.splitlines()[1:]))
    assert dockyard("cache", "clear").returncode == 2

    task = client.build_signature(repo, path=str(project), tag="status").apply_async()
    task.get(timeout=TIMEOUT_S)
    status = dockyard("status", task.id)
    assert status.returncode == 0 and status.stdout.splitlines()[0] == "state\tSUCCESS"
    assert json.loads(status.stdout.splitlines()[1].split("\t", 1)[1])["image"] == f"{repo}:status"


def test_a_failing_build_exits_non_zero_with_the_error(project: Path, repo: str, farm_workers: list[WorkerProcess]) -> None:
    (project / "Dockerfile").write_text("FROM 127.0.0.1:5000/base/busybox:1\nRUN echo about-to-fail && false\n")
    failed = dockyard("build", repo, "--path", str(project), "--tag", "bad")
    assert failed.returncode == 1
    assert "dockyard: BuildError:" in failed.stderr and "non-zero code" in failed.stderr
    assert "about-to-fail" in failed.stderr, "the output before the failure was shown"
    assert failed.stdout == ""

    task = client.build_signature(repo, path=str(project), tag="bad2").apply_async()
    with pytest.raises(Exception):
        task.get(timeout=TIMEOUT_S)
    status = dockyard("status", task.id)
    assert status.returncode == 1 and "state\tFAILURE" in status.stdout and "BuildError" in status.stdout


def test_up_runs_the_main_job_and_down_stops_its_worker(registry: Registry, farm_workers: list[WorkerProcess]) -> None:
    up = subprocess.run([sys.executable, "-m", "workers.cli", "up"], capture_output=True, text=True, timeout=600)
    assert up.returncode == 0, up.stderr[-3000:]
    lines = dict(line.split(None, 1) for line in up.stdout.splitlines() if line.strip())
    reference, digest = lines["pushed"].strip(), lines["digest"].strip()
    repository, tag = reference.removeprefix(registry.url + "/").rsplit(":", 1)
    assert registry.manifest_digest(repository, tag) == digest
    assert "dockyard down" in up.stdout
    down = dockyard("down")
    assert down.returncode == 0 and down.stdout.startswith("stopped ") and down.stdout.strip() != "stopped nothing"
