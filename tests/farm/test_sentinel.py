"""Redis fails over under a build run: the Sentinel master is SIGKILLed, every build is answered, none twice.

Runs ``benchmarks.failover`` small (its own two workers, on the ``sentinel://``
URLs of ``workers/provision_sentinel.sh``, which it provisions itself, so a
``CI=true`` run needs nothing more; the test database and prefix; production
defaults, only the sentinels' down-after timing is the test's): 30
requests over 15 contexts, the master killed once 8 are answered. Builds per
context are counted from the engines' live events. Afterwards the killed
Redis runs again as a replica of the new master.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.farm.conftest import TEST_REDIS_DB
from tests.farm.farm_helpers import production_environment

REPO = Path(__file__).resolve().parents[2]
BUILDS, KEYS = 30, 15


def test_a_master_killed_mid_run_loses_no_build_and_builds_no_key_twice(tmp_path: Path) -> None:
    figures_path = tmp_path / "figures.json"
    run = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.failover", "--builds", str(BUILDS), "--keys", str(KEYS),
         "--kill-after", str(8 / BUILDS), "--db", TEST_REDIS_DB, "--key-prefix", "dockyard-test:",
         "--json", str(figures_path)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=production_environment(),
    )
    try:
        _out, err = run.communicate(timeout=280)
    except subprocess.TimeoutExpired:
        run.terminate()  # the run stops the workers it started (in sessions of their own) on SIGTERM
        _out, err = run.communicate(timeout=60)
        pytest.fail(f"the failover run took over 280 s: {err[-4000:]}")
    assert run.returncode == 0, err[-4000:]
    figures = json.loads(figures_path.read_text())
    report = json.dumps(figures, indent=1)
    assert "new_master_port" in figures and figures["killed_port"] != figures["new_master_port"], report
    assert figures["answered_at_kill"] < BUILDS, report  # the kill came while builds were under way
    assert (figures["answered"], figures["failed"]) == (BUILDS, 0), report
    # No worker dies of the failover (kombu's crash on a released channel: workers/kombu_fix.py), and no
    # key is built twice: leases and entries reach the replica before their owner goes on (tasks/cache/lease.py).
    print(f"workers alive at the end: {len(figures['workers_alive_at_end'])} of 2; most builds of one key: "
          f"{figures['max_builds_per_key']}; builds sent again after the failover: {figures['resent_after_failover']}")
    assert len(figures["workers_alive_at_end"]) == 2, report
    assert figures["keys_built"] == KEYS and figures["max_builds_per_key"] == 1, report
    assert figures["engine_stream_errors"] == [], report
    assert figures["keys_with_several_image_ids"] == [], report
