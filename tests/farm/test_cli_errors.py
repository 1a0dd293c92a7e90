"""Each failure path of the ``dockyard`` command, run as a child process with a controlled environment:
exactly one line ``dockyard: Type: message`` on stderr, exit 1 (the operation failed) or 2 (the command
line is wrong), never a traceback.

Redis is the farm's, on the test database (13) and the test prefix ``dockyard-test:`` that
``tests/farm/conftest.py`` sets up; no worker is needed.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import uuid
from collections.abc import Mapping
from pathlib import Path

import pytest
import redis

from tests.farm.conftest import CALLER_REDIS_URL, TEST_REDIS_DB, WORKER_REDIS_URL

TIMEOUT_S = 60
ONE_LINE = re.compile(r"^dockyard: \w+: ")


def dockyard(*args: str, env: Mapping[str, str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m dockyard.workers.cli ARGS`` with the test environment (database 13, prefix
    ``dockyard-test:``) and ``env`` over it."""
    full = {**os.environ, **env}
    assert full["DOCKYARD_KEY_PREFIX"] == "dockyard-test:"
    return subprocess.run(
        [sys.executable, "-m", "dockyard.workers.cli", *args], capture_output=True, text=True,
        timeout=TIMEOUT_S, env=full, input=stdin if stdin is not None else "",
    )


def assert_one_line(done: subprocess.CompletedProcess[str], code: int, pattern: str) -> str:
    """Exactly one stderr line ``dockyard: Type: message``, matching ``pattern``; exit ``code``; no traceback."""
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert ONE_LINE.match(lines[0]), lines[0]
    assert re.match(pattern, lines[0]), lines[0]
    assert done.returncode == code, (done.returncode, done.stderr)
    return lines[0]


def closed_port() -> int:
    """A loopback port nothing listens on (bound for a moment, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def test_db(redis_client: redis.Redis) -> None:
    """The test database: the session fixture checked every URL is database 13 (and cleans it at the end)."""
    assert WORKER_REDIS_URL.endswith("/" + TEST_REDIS_DB) and CALLER_REDIS_URL.endswith("/" + TEST_REDIS_DB)


@pytest.mark.parametrize(
    ("env", "pattern"),
    [
        ({"DOCKYARD_WORKER_CONCURRENCY": "abc"},
         r"dockyard: InvalidSettings: DOCKYARD_WORKER_CONCURRENCY: Input should be a valid integer.*\(got 'abc'\)$"),
        ({"DOCKYARD_TASK_TIME_LIMIT_S": "100", "DOCKYARD_VISIBILITY_TIMEOUT_S": "50"},
         r"dockyard: InvalidSettings: task_time_limit_s \(DOCKYARD_TASK_TIME_LIMIT_S, 100\) must be below "
         r"visibility_timeout_s \(DOCKYARD_VISIBILITY_TIMEOUT_S, 50\)"),
        ({"DOCKYARD_HOST_ID": "builder.fast"},
         r"dockyard: InvalidSettings: DOCKYARD_HOST_ID: host id 'builder.fast' ends in '\.fast'"),
    ],
)
@pytest.mark.parametrize("command", [["cache", "list"], ["hosts"], ["status", "any-id"]])
def test_a_bad_setting_is_one_line_naming_it(command: list[str], env: dict[str, str], pattern: str) -> None:
    failed = dockyard(*command, env=env)
    assert_one_line(failed, 1, pattern)
    assert failed.stdout == ""


def test_a_worker_with_a_fast_lane_host_id_does_not_start() -> None:
    failed = dockyard("worker", "--host-id", "h.fast", env={"DOCKYARD_REDIS_URL": f"redis://127.0.0.1:{closed_port()}/0"})
    assert_one_line(failed, 1, r"dockyard: InvalidSettings: DOCKYARD_HOST_ID: host id 'h.fast' ends in '\.fast'")


@pytest.mark.parametrize(
    "command",
    [["cache", "clear", "no-such-key"], ["hosts"], ["hosts", "--json"]],
)
def test_an_operator_command_with_the_callers_url_is_noperm(command: list[str], test_db: None) -> None:
    refused = dockyard(*command, env={"DOCKYARD_REDIS_URL": CALLER_REDIS_URL})
    line = assert_one_line(refused, 1, r"dockyard: NoPermissionError: ")
    assert line.endswith("(operator commands need the farm's worker Redis user, not a caller's)")
    assert CALLER_REDIS_URL.split("@")[0] not in line, "the URL (and its password) is not shown"


def test_an_unknown_task_id_is_an_error(test_db: None) -> None:
    task_id = str(uuid.uuid4())
    for url in (CALLER_REDIS_URL, WORKER_REDIS_URL):  # any user that may read results
        unknown = dockyard("status", task_id, env={"DOCKYARD_REDIS_URL": url})
        line = assert_one_line(unknown, 1, rf"dockyard: UnknownTask: no task with id {task_id} is known to the result backend")
        assert "waiting in a queue" in line, "the message says a queued task has no record yet either"
        assert unknown.stdout == "", "no PENDING state printed"
        as_json = dockyard("status", task_id, "--json", env={"DOCKYARD_REDIS_URL": url})
        assert_one_line(as_json, 1, r"dockyard: UnknownTask: ") and as_json.stdout == ""


@pytest.mark.parametrize("value", ["X", "=1"])
def test_a_bad_build_arg_is_a_usage_error(value: str, tmp_path: Path) -> None:
    failed = dockyard(
        "build", "127.0.0.1:5000/dockyard-test/any", str(tmp_path), "--build-arg", "A=1", "--build-arg", value,
        env={"DOCKYARD_REDIS_URL": f"redis://127.0.0.1:{closed_port()}/0"},  # nothing is sent: the parser stops it
    )
    line = assert_one_line(failed, 2, r"dockyard: UsageError: argument --build-arg: expected KEY=VALUE, ")
    assert repr(value) in line
    assert failed.stdout == ""


@pytest.mark.parametrize(
    "command",
    [["hosts"], ["hosts", "--json"], ["cache", "list", "--json"], ["cache", "clear", "--all"], ["status", "some-id"],
     ["build", "127.0.0.1:5000/dockyard-test/x", "CONTEXT"]],
)
def test_redis_down_is_one_line(command: list[str], tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM 127.0.0.1:5000/base/busybox:1\n")
    args = [str(tmp_path) if arg == "CONTEXT" else arg for arg in command]
    down = f"redis://127.0.0.1:{closed_port()}/0"
    failed = dockyard(*args, env={"DOCKYARD_REDIS_URL": down, "DOCKYARD_CONTEXT_STORE_URL": down})
    assert_one_line(failed, 1, r"dockyard: (ConnectionError|OperationalError): .*127\.0\.0\.1")
    assert failed.stdout == ""
