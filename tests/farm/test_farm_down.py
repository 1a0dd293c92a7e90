"""`dockyard down` stops what this farm's `dockyard up` started, not every pid file of a shared state directory.

Two farms share one state directory: this checkout's, and another checkout's (its identity, as its own
`dockyard up` would write it). Each starts a worker the way `dockyard up` does (``farm.start_worker``);
`dockyard down` of this farm stops its own and leaves the other's running; `dockyard down --host` stops that one.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from dockyard.config.settings import get_settings
from dockyard.workers import farm
from dockyard.workers.launcher import alive
from tests.farm.conftest import WORKER_REDIS_URL, WORKER_STORE_URL, farm_docker_hosts
from tests.farm.test_build_network import wait_until
from tests.farm.test_cli import dockyard


def start_as_up(host_id: str, checkout: str | None) -> int:
    """``farm.start_worker`` in a process of its own that then exits, as `dockyard up` does (the worker is
    not this test's child); ``checkout``: start it as that checkout's farm."""
    code = (
        "import sys; from dockyard.config.settings import get_settings; from dockyard.workers import farm; "
        "s = get_settings(); checkout = sys.argv[3] or farm.CHECKOUT; "
        "print(farm.start_worker(s, host_id=sys.argv[1], docker_host=sys.argv[2], identity=farm.farm_identity(s, checkout=checkout)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, host_id, farm_docker_hosts()[0], checkout or ""],
        capture_output=True, text=True, timeout=60, check=True,
    )
    return int(done.stdout.strip())


def test_down_leaves_another_checkouts_worker_running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = uuid.uuid4().hex[:6]
    state = tmp_path / "shared-state"
    for name, value in {
        "DOCKYARD_STATE_DIR": str(state), "DOCKYARD_REDIS_URL": WORKER_REDIS_URL, "DOCKYARD_CONTEXT_STORE_URL": WORKER_STORE_URL,
        "DOCKYARD_BUILD_QUEUE": f"dockyard-test.down-{run}",
    }.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    settings = get_settings()
    other = farm.farm_identity(settings, checkout=str(tmp_path / "other-checkout"))
    mine_id, theirs_id = f"test-down-mine-{run}", f"test-down-theirs-{run}"
    mine = start_as_up(mine_id, None)
    theirs = start_as_up(theirs_id, other["checkout"])
    try:
        assert json.loads((state / f"{theirs_id}.pid").read_text())["farm"] == other
        for pid_log in (mine_id, theirs_id):
            wait_until(lambda: "ready." in farm.log_path(settings, pid_log).read_text(errors="replace"), f"{pid_log} is ready")
        down = dockyard("down", "--json")
        assert down.returncode == 0, down.stderr
        assert json.loads(down.stdout) == {"stopped": [mine_id], "left_running": [theirs_id]}
        wait_until(lambda: not alive(mine), "this farm's worker has stopped")
        assert alive(theirs), "down stopped its own worker only"
        assert not (state / f"{mine_id}.pid").exists() and (state / f"{theirs_id}.pid").exists()
        again = dockyard("down")
        assert again.returncode == 0 and again.stdout.startswith("stopped nothing") and theirs_id in again.stdout
        assert alive(theirs)
        cleaned = dockyard("down", "--host", theirs_id, "--json")
        assert cleaned.returncode == 0 and json.loads(cleaned.stdout)["stopped"] == [theirs_id], cleaned.stdout
        wait_until(lambda: not alive(theirs), "the other farm's worker has stopped")
    finally:
        farm.stop_workers(settings, every=True)
        get_settings.cache_clear()
