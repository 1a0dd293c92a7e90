"""Each CLI command against the real farm: its output and its exit code.

A failure is one line on stderr, ``dockyard: Type: message``, exit 1 (the
operation failed) or 2 (the command line is wrong), never a traceback.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import docker
import pytest
import redis

from dockyard.config.settings import get_settings
from dockyard.tasks import client
from dockyard.tasks.farm import hosts
from tests.farm import conftest
from tests.farm.conftest import WORKER_REDIS_URL, Registry, WorkerProcess, farm_docker_hosts
from dockyard.workers import cli

TIMEOUT_S = 120
COMMANDS = ["up", "down", "hosts", "cache", "status", "worker", "build", "push", "drain", "undrain", "cancel", "doctor"]


def dockyard(
    *args: str, env: Mapping[str, str] | None = None, cwd: Path | None = None, stdin: str = "",
) -> subprocess.CompletedProcess[str]:
    """Run ``dockyard ARGS`` in a child process, with the test environment plus ``env``.

    The CLI runs as an operator: the worker user's Redis URL (the test process itself is a caller).
    """
    return subprocess.run(
        [sys.executable, "-m", "dockyard.workers.cli", *args], capture_output=True, text=True, timeout=TIMEOUT_S,
        env={**os.environ, "DOCKYARD_REDIS_URL": WORKER_REDIS_URL, **(env or {})}, cwd=cwd, input=stdin,
    )


def assert_one_line_failure(stderr: str, code: int, expected_code: int, pattern: str) -> str:
    """stderr is exactly one line ``dockyard: Type: message`` matching ``pattern``; the exit code is right."""
    assert "Traceback" not in stderr, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert re.fullmatch(r"dockyard: \w+: .+", lines[0]), lines[0]
    assert re.match(pattern, lines[0]), lines[0]
    assert code == expected_code, (code, stderr)
    return lines[0]


def closed_port() -> int:
    """A loopback port nothing listens on (bound for a moment, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def drop_queue_keys(redis_client: redis.Redis, fragment: str) -> None:
    """Remove a queue made for one test and kombu's bindings of it from the broker."""
    for name in redis_client.scan_iter(match=f"*{fragment}*"):
        redis_client.delete(name)


@pytest.mark.parametrize("command", [[], *[[c] for c in COMMANDS], ["cache", "list"], ["cache", "clear"]])
def test_every_command_has_help(command: list[str]) -> None:
    shown = dockyard(*command, "--help")
    assert shown.returncode == 0 and "usage: dockyard" in shown.stdout
    assert len(shown.stdout.splitlines()) > 2


def test_every_help_is_plain_text_and_version_is_the_installed_one() -> None:
    for command in [[], *[[c] for c in COMMANDS], ["cache", "list"], ["cache", "clear"]]:
        shown = dockyard(*command, "--help").stdout
        assert "``" not in shown and "`" not in shown and not re.search(r":[a-z]+:", shown.replace("http:", "")), shown
    version = dockyard("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"dockyard {importlib.metadata.version('dockyard')}"


def test_hosts_lists_the_live_hosts_with_their_load(farm_workers: list[WorkerProcess]) -> None:
    listed = dockyard("hosts")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split("\t") == [
        "HOST", "RUNNING", "CONCURRENCY", "QUEUE", "DOCKER", "METRICS", "LINEAGES", "FAST", "AGE", "STATE",
    ]
    rows = {line.split("\t")[0]: line.split("\t") for line in lines[1:]}
    for worker in farm_workers:
        assert worker.host_id in rows
        assert rows[worker.host_id][1].isdigit() and rows[worker.host_id][2] == "2"
        assert rows[worker.host_id][5].startswith("http://127.0.0.1:")
        assert rows[worker.host_id][7].isdigit(), "the fast lane runs: its running tasks are counted"
        assert rows[worker.host_id][8].endswith("s") and rows[worker.host_id][9] == "active"

    as_json = dockyard("hosts", "--json")
    assert as_json.returncode == 0, as_json.stderr
    records = {record["host"]: record for record in json.loads(as_json.stdout)}
    for worker in farm_workers:
        record = records[worker.host_id]
        assert record["concurrency"] == 2 and record["queue"] == f"dockyard.host.{worker.host_id}"
        assert record["fast_queue"] == f"dockyard.host.{worker.host_id}.fast" and isinstance(record["running_fast"], int)
        assert isinstance(record["running"], int) and isinstance(record["lineages"], list)


def test_build_push_cache_and_status(project: Path, repo: str, registry: Registry, farm_workers: list[WorkerProcess]) -> None:
    (project / "Dockerfile").write_text(
        (project / "Dockerfile").read_text() + f"RUN echo cli-{uuid.uuid4().hex[:6]}\n"
    )
    built = dockyard("build", repo, "--path", str(project), "--tag", "cli", "--additional-tag", "cli2")
    assert built.returncode == 0, built.stderr
    result = json.loads(built.stdout)
    assert result["image"] == f"{repo}:cli" and result["additional_tags"] == ["cli2"]
    assert "Step 1/" in built.stderr, "build output is shown live"

    wrong = project.parent / "wrong-password"
    wrong.write_text("not-the-password\n")
    refused = dockyard("push", repo, "--tag", "cli", "--username", registry.username, "--password-file", str(wrong))
    assert_one_line_failure(refused.stderr, refused.returncode, 1, r"dockyard: RegistryAuthError: Login to 127\.0\.0\.1:5000 failed")

    pushed = dockyard(
        "push", repo, "--tag", "cli", "--additional-tag", "cli2", "--username", registry.username,
        env={"DOCKYARD_PUSH_PASSWORD": registry.password},
    )
    assert pushed.returncode == 0, pushed.stderr
    assert json.loads(pushed.stdout)["digest"] == registry.manifest_digest(repo.removeprefix(registry.url + "/"), "cli")

    listed = dockyard("cache", "list")
    assert listed.returncode == 0
    rows = [line.split("\t") for line in listed.stdout.splitlines()[1:]]
    mine = [row for row in rows if row[1] == result["image_id"]]
    assert mine and mine[0][2] == result["host"]
    as_json = dockyard("cache", "list", "--json")
    assert as_json.returncode == 0, as_json.stderr
    entries = [entry for entry in json.loads(as_json.stdout) if entry["image_id"] == result["image_id"]]
    assert [(entry["key"], entry["host"]) for entry in entries] == [(mine[0][0], result["host"])]
    assert entries[0]["age_s"] >= 0
    cleared = dockyard("cache", "clear", mine[0][0])
    assert cleared.returncode == 0 and cleared.stdout.strip() == "cleared 1 cache entry"
    assert all(row[0] != mine[0][0] for row in (line.split("\t") for line in dockyard("cache", "list").stdout.splitlines()[1:]))
    assert dockyard("cache", "clear").returncode == 2

    task = client.build_signature(repo, path=str(project), tag="status").apply_async()
    status_result = task.get(timeout=TIMEOUT_S)
    status = dockyard("status", task.id)
    assert status.returncode == 0 and status.stdout.splitlines()[0] == "state\tSUCCESS"
    assert json.loads(status.stdout.splitlines()[1].split("\t", 1)[1])["image"] == f"{repo}:status"
    status_json = dockyard("status", task.id, "--json")
    assert status_json.returncode == 0 and status_json.stderr == ""
    record = json.loads(status_json.stdout)
    assert record["task_id"] == task.id and record["state"] == "SUCCESS" and record["result"]["image"] == f"{repo}:status"

    rows = [line.split("\t") for line in dockyard("cache", "list").stdout.splitlines()[1:]]
    present = next(row[0] for row in rows if row[1] == status_result["image_id"])
    missing = f"no-such-key-{uuid.uuid4().hex[:8]}"
    partly = dockyard("cache", "clear", present, missing)
    line = assert_one_line_failure(partly.stderr, partly.returncode, 1, r"dockyard: CacheKeysNotFound: not in the build cache: ")
    assert line.endswith(": " + missing), "only the keys not found are named"
    assert partly.stdout.strip() == "cleared 1 cache entry"


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
    assert_one_line_failure(status.stderr, status.returncode, 1, rf"dockyard: BuildError: task {task.id} failed: ")
    status_json = dockyard("status", task.id, "--json")
    record = json.loads(status_json.stdout)
    assert record["state"] == "FAILURE" and record["error"]["type"] == "BuildError" and status_json.returncode == 1


MULTI_STAGE = """\
FROM {base} AS t
ARG X
RUN test "$X" = 1
RUN echo "built with X=$X" > /stage.txt

FROM {base} AS last
RUN echo "the last stage is built only without --target t" && false
"""


def test_build_takes_docker_builds_arguments_and_push_reads_the_password_from_stdin(
    tmp_path: Path, repo: str, registry: Registry, base_image: str, farm_workers: list[WorkerProcess],
) -> None:
    """``dockyard build IMAGE ./ctx -f F -t a -t b --build-arg X=1 --target t`` on the farm's workers:
    the image has both tags and was built from stage t with X=1 (the last stage, or X unset, fails)."""
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile.stages").write_text(MULTI_STAGE.format(base=base_image))  # no Dockerfile: -f must be used
    (context / "unique.txt").write_text(uuid.uuid4().hex)
    (context / "Dockerfile.stages").write_text(
        (context / "Dockerfile.stages").read_text().replace("ARG X\n", f"ARG X\nRUN echo {uuid.uuid4().hex[:8]}\n", 1)
    )
    built = dockyard(
        "build", repo, "./ctx", "-f", "Dockerfile.stages", "-t", "a", "-t", "b", "--build-arg", "X=1", "--target", "t",
        "--label", "dockyard-test.cli=yes", cwd=tmp_path,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    result = json.loads(built.stdout)
    assert result["image"] == f"{repo}:a" and result["tag"] == "a" and result["additional_tags"] == ["b"]
    assert result["cache"] == "built" and result["host"] in {worker.host_id for worker in farm_workers}

    engine_url = next(worker.docker_host for worker in farm_workers if worker.host_id == result["host"])
    engine = docker.DockerClient(base_url=engine_url)  # the engine of the host that built it
    try:
        image = engine.images.get(result["image_id"])
        history = " ".join(str(layer.get("CreatedBy", "")) for layer in image.history())
    finally:
        engine.close()
    assert {f"{repo}:a", f"{repo}:b"} <= set(image.tags), image.tags
    assert image.labels.get("dockyard-test.cli") == "yes"
    assert "X=1" in history and "/stage.txt" in history, "stage t ran with the build arg"
    assert "the last stage is built only" not in history

    pushed = dockyard(
        "push", repo, "-t", "a", "-t", "b", "--username", registry.username, "--password-stdin", "--json",
        stdin=registry.password + "\n",
    )
    assert pushed.returncode == 0, pushed.stderr
    answer = json.loads(pushed.stdout)
    repository = repo.removeprefix(registry.url + "/")
    assert answer["image"] == f"{repo}:a" and answer["additional_tags"] == ["b"]
    assert registry.manifest_digest(repository, "a") == registry.manifest_digest(repository, "b") == answer["digest"]
    assert registry.password not in pushed.stdout + pushed.stderr


def test_up_runs_the_main_job_and_down_stops_its_worker(registry: Registry, farm_workers: list[WorkerProcess]) -> None:
    up = subprocess.run(
        [sys.executable, "-m", "dockyard.workers.cli", "up", "--team-env", conftest.TEAM_A_ENV],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "DOCKYARD_REDIS_URL": WORKER_REDIS_URL},  # an operator's command: the worker user
    )
    assert up.returncode == 0, up.stderr[-3000:]
    lines = dict(line.split(None, 1) for line in up.stdout.splitlines() if line.strip())
    reference, digest = lines["pushed"].strip(), lines["digest"].strip()
    repository, tag = reference.removeprefix(registry.url + "/").rsplit(":", 1)
    assert registry.manifest_digest(repository, tag) == digest
    assert "dockyard down" in up.stdout
    settings = get_settings()
    assert settings.state_dir, "the tests give dockyard up a state dir of their own"
    log = Path(settings.state_dir) / f"{settings.host_id}.log"
    assert up.stdout.rstrip().endswith(f"its log is {log}"), up.stdout
    assert log.is_file() and log.stat().st_size > 0, "the log named is the worker's"
    down = dockyard("down")
    assert down.returncode == 0 and down.stdout.startswith("stopped ") and down.stdout.strip() != "stopped nothing"


@pytest.mark.parametrize("value", ["X", "=x"])
def test_a_build_arg_without_key_and_value_is_a_usage_error(value: str) -> None:
    failed = dockyard("build", "127.0.0.1:5000/dockyard-test/any", "--build-arg", "A=1", "--build-arg", value)
    line = assert_one_line_failure(failed.stderr, failed.returncode, 2, r"dockyard: UsageError: argument --build-arg: ")
    assert "KEY=VALUE" in line and repr(value) in line
    assert failed.stdout == ""


@pytest.mark.parametrize(
    ("argv", "pattern"),
    [
        (["nosuch"], r"dockyard: UsageError: argument COMMAND: invalid choice: 'nosuch'"),
        (["build"], r"dockyard: UsageError: the following arguments are required: IMAGE"),
        (["build", "x/y", ".", "--label", "nokey"], r"dockyard: UsageError: argument --label: expected KEY=VALUE"),
        (["push", "x/y", "--password-stdin"], r"dockyard: UsageError: --password-stdin given without --username"),
        (["push", "x/y", "--timeout", "0"], r"dockyard: UsageError: argument --timeout: expected a positive"),
        (["worker", "--concurrency", "0"], r"dockyard: UsageError: argument --concurrency: expected a number above zero"),
        (["cache", "clear"], r"dockyard: UsageError: give cache keys to clear, or --all"),
        (["cache", "clear", "--all", "k"], r"dockyard: UsageError: give cache keys or --all, not both"),
        (["push", "x/y", "--username", "u"], r"dockyard: UsageError: --username needs a password: set DOCKYARD_PUSH_PASSWORD"),
        (["push", "x/y", "--username", "u", "--password-env", "DOCKYARD_TEST_UNSET"], r"dockyard: UsageError: --username needs a password: set DOCKYARD_TEST_UNSET"),
        (["push", "x/y", "--username", "u", "--password-file", "/nonexistent/pw"], r"dockyard: UsageError: --password-file: cannot read /nonexistent/pw"),
        (["push", "x/y", "--password-env", "V"], r"dockyard: UsageError: --password-env given without --username"),
        (["push", "x/y", "--registry-url", "r:5000"], r"dockyard: UsageError: --registry-url given without --username"),
        (["push", "x/y", "--username", "u", "--password-env", "V", "--password-file", "f"], r"dockyard: UsageError: argument --password-file: not allowed with argument --password-env"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(
    argv: list[str], pattern: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(cli.PUSH_PASSWORD_ENV, raising=False)
    monkeypatch.delenv("DOCKYARD_TEST_UNSET", raising=False)
    code = cli.main(argv)
    captured = capsys.readouterr()
    assert_one_line_failure(captured.err, code, 2, pattern)
    assert captured.out == ""


@pytest.fixture
def sent_pushes(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """``dockyard.tasks.client.push`` replaced by a recorder: the CLI's arguments, nothing sent."""
    calls: list[dict[str, Any]] = []

    def record(image_name: str, **kwargs: Any) -> dict[str, Any]:
        calls.append({"image_name": image_name, **kwargs})
        return {"image": image_name}

    monkeypatch.setattr(client, "push", record)
    monkeypatch.delenv(cli.PUSH_PASSWORD_ENV, raising=False)
    return calls


def test_push_takes_the_password_from_the_environment_or_a_file(
    sent_pushes: list[dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    image = "127.0.0.1:5000/team/app"
    monkeypatch.setenv(cli.PUSH_PASSWORD_ENV, "from-default-env")
    monkeypatch.setenv("MY_REGISTRY_PASSWORD", "from-named-env")
    secret = tmp_path / "password"
    secret.write_text("from-file\n")

    assert cli.main(["push", image, "--tag", "v1", "--username", "alice"]) == 0
    assert cli.main(["push", image, "--username", "bob", "--password-env", "MY_REGISTRY_PASSWORD", "--registry-url", "other:5000"]) == 0
    assert cli.main(["push", image, "--username", "carol", "--password-file", str(secret), "--timeout", "7.5"]) == 0
    assert cli.main(["push", image]) == 0, "no --username: the workers' own login, even with DOCKYARD_PUSH_PASSWORD set"

    assert [call["credentials"] for call in sent_pushes] == [
        {"username": "alice", "password": "from-default-env", "registry_url": "127.0.0.1:5000"},
        {"username": "bob", "password": "from-named-env", "registry_url": "other:5000"},
        {"username": "carol", "password": "from-file", "registry_url": "127.0.0.1:5000"},
        None,
    ]
    assert [call["timeout_s"] for call in sent_pushes] == [None, None, 7.5, None]
    captured = capsys.readouterr()
    assert captured.err == "" and "from-" not in captured.out


@pytest.mark.parametrize(
    "command",
    [["hosts"], ["cache", "list"], ["cache", "clear", "some-key"], ["build", "127.0.0.1:5000/dockyard-test/x"],
     ["push", "127.0.0.1:5000/dockyard-test/x", "--tag", "t"], ["status", "no-such-task"]],
)
def test_a_redis_outage_is_one_line_and_exit_1(command: list[str], tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM 127.0.0.1:5000/base/busybox:1\n")
    args = [*command, "--path", str(tmp_path)] if command[0] == "build" else command
    down = f"redis://127.0.0.1:{closed_port()}/0"
    failed = dockyard(*args, env={"DOCKYARD_REDIS_URL": down})
    assert_one_line_failure(
        failed.stderr, failed.returncode, 1, r"dockyard: (ConnectionError|OperationalError): .*127\.0\.0\.1"
    )
    assert "KEY" not in failed.stdout, "no table header before the failure"


def test_push_and_build_without_a_consuming_worker_time_out(project: Path, redis_client: redis.Redis) -> None:
    queue = f"dockyard-test.nobody-{uuid.uuid4().hex[:8]}"  # a queue no worker consumes
    image = f"127.0.0.1:5000/dockyard-test/{uuid.uuid4().hex[:10]}"
    settings = get_settings()  # the image is on the farm (so the caller sends its push), on a host that never answers
    hosts.record_image(redis_client, settings, host_id="nobody", image_id="sha256:" + "0" * 64, references=[f"{image}:t"])
    try:
        started = time.monotonic()
        pushed = dockyard("push", image, "--tag", "t", "--timeout", "2", env={"DOCKYARD_BUILD_QUEUE": queue})
        line = assert_one_line_failure(pushed.stderr, pushed.returncode, 1, r"dockyard: TimeoutError: No result for the push ")
        assert f"{image}:t within 2 s" in line
        built = dockyard("build", image, "--path", str(project), "--timeout", "2", env={"DOCKYARD_BUILD_QUEUE": queue})
        assert_one_line_failure(built.stderr, built.returncode, 1, r"dockyard: \w*Timeout\w*: No result for ")
        assert time.monotonic() - started < 60, "--timeout was honoured"
    finally:
        drop_queue_keys(redis_client, queue)


def test_clearing_keys_not_in_the_cache_says_which(redis_client: redis.Redis) -> None:
    missing = f"no-such-key-{uuid.uuid4().hex[:8]}"
    cleared = dockyard("cache", "clear", missing)
    line = assert_one_line_failure(cleared.stderr, cleared.returncode, 1, r"dockyard: CacheKeysNotFound: not in the build cache: ")
    assert line.endswith(missing)
    assert cleared.stdout.strip() == "cleared 0 cache entries"


@pytest.fixture
def lone_worker(engine: docker.DockerClient, redis_client: redis.Redis, tmp_path: Path) -> Iterator[str]:
    """A real ``dockyard worker --concurrency 3`` on a queue of its own (it takes no other test's builds)."""
    host_id = f"test-conc-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ, "DOCKYARD_DOCKER_HOST": farm_docker_hosts()[0], "DOCKYARD_REDIS_URL": WORKER_REDIS_URL,
        "DOCKYARD_BUILD_QUEUE": f"dockyard-test.{host_id}",
    }
    env.pop("DOCKYARD_WORKER_CONCURRENCY", None)
    log_path = tmp_path / "worker.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "dockyard.workers.cli", "worker", "--concurrency", "3", "--host-id", host_id],
            env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
    try:
        yield host_id
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        drop_queue_keys(redis_client, host_id)


def test_hosts_shows_the_concurrency_given_to_dockyard_worker(lone_worker: str) -> None:
    deadline = time.monotonic() + 60
    row: list[str] = []
    while not row and time.monotonic() < deadline:
        listed = dockyard("hosts")
        assert listed.returncode == 0, listed.stderr
        row = next((line.split("\t") for line in listed.stdout.splitlines() if line.startswith(lone_worker + "\t")), [])
        time.sleep(0.5)
    assert row, f"{lone_worker} never appeared in `dockyard hosts`"
    assert row[2] == "3", row
