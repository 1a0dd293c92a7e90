"""Three build hosts and a caller, each a host of its own (network and mount namespaces), as separate machines.

The farm (``tests.farm.separate_hosts``): the control (this process's namespace) runs Redis, the
context store and the registry on its link-local address; each build host has its own loopback,
``/tmp``, engine and worker; build host 3 starts its worker with the docs' recipe (the
``recipe: build-host`` block of docs/several-hosts.md, run as it is). Build counts are read from the
engines' own events. Recovery runs with the settings users get (nothing shortened).
"""

from __future__ import annotations

import json
import queue
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import requests

from dockyard.config.settings import host_queue, team_queue
from dockyard.tasks.farm.hosts import live_hosts
from tests.farm.farm_helpers import container_creates, image_id_on_any, settle
from tests.farm.separate_hosts import (
    REPO_ROOT, TEAM, Farm, Host, SeparateWorker, farm_redis, farm_settings, minimal_env, operator_app, separate_farm,
)

DOCS_PAGE = REPO_ROOT / "docs" / "several-hosts.md"
RECIPE_HOST = 3  # build host 3 runs the docs' recipe
BUILD_S = 6  # the slow step of the concurrent and the killed builds
ANSWER_S = 240


def docs_recipe() -> str:
    """The shell block under ``<!-- recipe: build-host -->`` in docs/several-hosts.md, as it is."""
    found = re.search(r"<!-- recipe: build-host -->\n```sh\n(.*?)```", DOCS_PAGE.read_text(), flags=re.S)
    assert found, f"{DOCS_PAGE} has no recipe block"
    return found.group(1)


class Caller:
    """``tests.farm.separate_caller`` on the caller host: requests sent, answers collected by id."""

    def __init__(self, farm: Farm) -> None:
        self.farm = farm
        env = minimal_env(PYTHONPATH=str(REPO_ROOT), **farm.caller_env())
        self.stderr = open(farm.work_dir / "caller.log", "ab")  # noqa: SIM115 - closed in close()
        self.process = subprocess.Popen(
            [*farm.caller.nsenter(), sys.executable, "-m", "tests.farm.separate_caller"], env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, text=True, bufsize=1,
        )
        self.answers: dict[str, dict[str, Any]] = {}
        self.arrived = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        self.wait("ready", 60)

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            document = json.loads(line)
            with self.arrived:
                self.answers[document["id"]] = document
                self.arrived.notify_all()

    def send(self, op: str, **request: Any) -> str:
        request_id = uuid.uuid4().hex[:8]
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"id": request_id, "op": op, **request}) + "\n")
        self.process.stdin.flush()
        return request_id

    def done(self, request_id: str) -> bool:
        with self.arrived:
            return request_id in self.answers

    def wait(self, request_id: str, timeout_s: float = ANSWER_S) -> Any:
        deadline = time.monotonic() + timeout_s
        with self.arrived:
            while request_id not in self.answers:
                if self.process.poll() is not None:
                    raise AssertionError(f"the caller exited: {(self.farm.work_dir / 'caller.log').read_text()[-3000:]}")
                if not self.arrived.wait(timeout=max(0.0, min(1.0, deadline - time.monotonic()))) and time.monotonic() > deadline:
                    raise AssertionError(f"no answer to {request_id} within {timeout_s} s")
            answer = self.answers[request_id]
        assert answer["ok"], answer["error"]
        return answer["result"]

    def call(self, op: str, **request: Any) -> Any:
        return self.wait(self.send(op, **request))

    def project(self, name: str, dockerfile: str, **files: str) -> str:
        """A build context on the caller's own disk; its path there."""
        root = f"/tmp/projects/{name}"
        self.call("write", files={f"{root}/Dockerfile": dockerfile, **{f"{root}/{n}": t for n, t in files.items()}})
        return root

    def close(self) -> None:
        if self.process.stdin:
            self.process.stdin.close()
        self.process.kill()
        self.process.wait()
        self.stderr.close()


@pytest.fixture(scope="module")
def separate() -> Iterator[tuple[Farm, list[SeparateWorker], Caller, list[docker.DockerClient]]]:
    with separate_farm(3, recipe_host=RECIPE_HOST, recipe=docs_recipe()) as (farm, workers):
        engines = [docker.DockerClient(base_url=url) for url in farm.engines.values()]
        caller = Caller(farm)
        try:
            yield farm, workers, caller, engines
        finally:
            caller.close()
            for engine in engines:
                engine.close()


@pytest.fixture
def farm(separate: tuple[Farm, list[SeparateWorker], Caller, list[docker.DockerClient]]) -> Farm:
    return separate[0]


def repo_name(farm: Farm) -> str:
    return f"{farm.registry}/{TEAM}/app-{uuid.uuid4().hex[:8]}"


def slow_dockerfile(farm: Farm, seconds: float) -> str:
    return f"FROM {farm.base_image}\nRUN sleep {seconds} && echo {uuid.uuid4()} > /built\n"


def registry_digest(farm: Farm, image: str, tag: str) -> str | None:
    repository = image.removeprefix(farm.registry + "/")
    response = requests.head(
        f"http://{farm.registry}/v2/{repository}/manifests/{tag}", auth=("dockyard", farm.registry_password),
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"}, timeout=10,
    )
    return response.headers.get("Docker-Content-Digest") if response.status_code == 200 else None


def builder_of(farm: Farm, workers: list[SeparateWorker], timeout_s: float = 60) -> SeparateWorker:
    """The worker with a build task running (the control's operator asks the workers)."""
    app = operator_app(farm)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        active = app.control.inspect(timeout=1).active() or {}
        for nodename, tasks in active.items():
            if any(task["name"] == "dockyard.build_docker_image" for task in tasks):
                return next(each for each in workers if nodename.startswith(each.host_id + "@"))
    raise AssertionError("no build started")


def reaches(host: Host, address: str, port: int) -> bool:
    """Whether a TCP connection from ``host`` to ``address:port`` succeeds."""
    probe = host.run(
        [sys.executable, "-c", "import socket, sys\ntry:\n    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)\n"
         "except OSError as exc:\n    sys.exit(f'{exc}')\n", address, str(port)], check=False,
    )
    return probe.returncode == 0


def test_hosts_see_neither_each_others_files_nor_loopback(
    separate: tuple[Farm, list[SeparateWorker], Caller, list[docker.DockerClient]], tmp_path: Path,
) -> None:
    farm, workers, _, _ = separate
    hosts = [*farm.hosts.values(), farm.caller]
    for host in hosts:
        host.run(["sh", "-c", f"echo {host.name} > /tmp/state/written-on-{host.name}"])
    control_file = tmp_path / "written-on-the-control"
    control_file.write_text("control\n")
    for host in hosts:
        assert host.run(["cat", f"/tmp/state/written-on-{host.name}"]).stdout == f"{host.name}\n", "a host sees its own file"
        for other in hosts:
            if other is not host:
                seen = host.run(["test", "-e", f"/tmp/state/written-on-{other.name}"], check=False).returncode == 0
                assert not seen, f"{host.name} sees a file {other.name} wrote in its /tmp/state"
        assert host.run(["test", "-e", str(control_file)], check=False).returncode != 0, f"{host.name} sees the control's /tmp"

    first, second = list(farm.hosts.values())[:2]
    port = 47000 + uuid.uuid4().int % 1000
    listener = first.start(
        [sys.executable, "-c", "import socket, time\ns = socket.create_server(('127.0.0.1', %d))\ntime.sleep(600)\n" % port],
        env=minimal_env(), log=farm.work_dir / "listener.log",
    )
    try:
        deadline = time.monotonic() + 30
        while not reaches(first, "127.0.0.1", port) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert reaches(first, "127.0.0.1", port), "the listener answers on its own host's loopback"
        for other in [second, farm.caller]:
            assert not reaches(other, "127.0.0.1", port), f"{other.name} reaches {first.name}'s loopback"
            assert not reaches(other, first.address, port), f"{other.name} reaches {first.name}'s address"
        assert reaches(second, farm.control, 6379), "every host reaches the control's Redis"
    finally:
        listener.kill()
        listener.wait()
    # the workers' own directories are their hosts' own
    for worker in workers:
        assert worker.host.run(["test", "-d", "/tmp/state"]).returncode == 0


def test_the_recipe_host_serves_and_advertises_its_metrics(
    separate: tuple[Farm, list[SeparateWorker], Caller, list[docker.DockerClient]],
) -> None:
    farm, workers, caller, _ = separate
    recipe_worker = workers[RECIPE_HOST - 1]
    assert recipe_worker.recipe is not None
    records = {record["host"]: record for record in live_hosts(farm_redis(farm), farm_settings(farm))}
    assert set(records) == set(farm.hosts), f"live hosts: {sorted(records)}"
    for host_id, host in farm.hosts.items():
        url = records[host_id]["metrics"]
        assert url.startswith(f"http://{host.address}:"), f"{host_id} advertises {url}"
        assert requests.get(url, timeout=10).status_code == 200, f"the control reads {host_id}'s metrics at {url}"
    repo = repo_name(farm)
    context = caller.project("on-recipe-host", f"FROM {farm.base_image}\nCOPY app.txt /app.txt\n", **{"app.txt": f"{uuid.uuid4()}\n"})
    built = caller.call("build", image_name=repo, kwargs={"path": context, "tag": "r"}, queue=team_queue(host_queue(recipe_worker.host_id), TEAM))
    assert built["host"] == recipe_worker.host_id
    pushed = caller.call("push", image_name=repo, kwargs={"tag": "r"})
    assert pushed["host"] == recipe_worker.host_id and registry_digest(farm, repo, "r") == pushed["digest"]


def test_twelve_identical_requests_build_once_and_pushes_find_the_holder(
    separate: tuple[Farm, list[SeparateWorker], Caller, list[docker.DockerClient]],
) -> None:
    farm, workers, caller, engines = separate
    repo = repo_name(farm)
    context = caller.project("twelve", slow_dockerfile(farm, BUILD_S))
    base_id = image_id_on_any(engines, farm.base_image)
    since = settle()
    received_before = [each.log().count("Task dockyard.build_docker_image[") for each in workers]
    # half through the caller's API, two sent to each host's own queue: every host surely gets requests
    on_hosts = [team_queue(host_queue(host_id), TEAM) for host_id in farm.hosts] * 2
    requests_sent = [
        *(caller.send("build", image_name=repo, kwargs={"path": context, "tag": "same"}) for _ in range(6)),
        *(caller.send("build", image_name=repo, kwargs={"path": context, "tag": "same"}, queue=each) for each in on_hosts),
    ]
    assert len(requests_sent) == 12
    results = [caller.wait(each) for each in requests_sent]
    until = settle()
    assert container_creates(engines, since, until, from_image=base_id) == 1, "one RUN step ran on the three engines"
    assert len({result["image_id"] for result in results}) == 1
    assert [result["cache"] for result in results].count("built") == 1
    holder = results[0]["host"]
    assert {result["host"] for result in results} == {holder}
    received = [each.log().count("Task dockyard.build_docker_image[") - before for each, before in zip(workers, received_before)]
    assert all(count > 0 for count in received), f"requests reached every host: {received}"

    # a push sent on its own, later: it finds the holder
    pushed = caller.call("push", image_name=repo, kwargs={"tag": "same"})
    assert pushed["host"] == holder
    assert registry_digest(farm, repo, "same") == pushed["digest"]

    # a chain build -> push: the push runs on the host that built
    chained_repo = repo_name(farm)
    chained_context = caller.project("chained", f"FROM {farm.base_image}\nCOPY app.txt /app.txt\n", **{"app.txt": f"{uuid.uuid4()}\n"})
    chain = caller.call("chain", image_name=chained_repo, kwargs={"path": chained_context, "tag": "c"})
    assert chain["pushed"]["host"] == chain["built"]["host"] in farm.hosts
    assert registry_digest(farm, chained_repo, "c") == chain["pushed"]["digest"]


def test_a_lineages_second_build_lands_on_the_first_ones_host(
    separate: tuple[Farm, list[SeparateWorker], Caller, list[docker.DockerClient]],
) -> None:
    farm, _, caller, engines = separate
    repo = repo_name(farm)
    dockerfile = f"FROM {farm.base_image}\nRUN sleep 1 && echo {uuid.uuid4()} > /deps\nCOPY app.txt /app.txt\n"
    base_id = image_id_on_any(engines, farm.base_image)
    since = settle()
    placed = []
    for version in range(4):
        context = caller.project("lineage", dockerfile, **{"app.txt": f"version {version}\n"})
        result = caller.call("build", image_name=repo, kwargs={"path": context, "tag": f"v{version}"})
        assert result["cache"] == "built"
        placed.append(result["host"])
    assert placed == [placed[0]] * 4, f"hosts of the successive builds: {placed}"
    assert container_creates(engines, since, settle(), from_image=base_id) == 1, "the slow step ran once"


def test_a_builder_killed_mid_build_is_answered_by_another_host(
    separate: tuple[Farm, list[SeparateWorker], Caller, list[docker.DockerClient]],
) -> None:
    farm, workers, caller, _ = separate
    repo = repo_name(farm)
    context = caller.project("killed", slow_dockerfile(farm, BUILD_S))
    sent = caller.send("build", image_name=repo, kwargs={"path": context, "tag": "k"})
    builder = builder_of(farm, workers)
    assert not caller.done(sent)
    builder.kill()
    killed_at = time.monotonic()
    try:
        result = caller.wait(sent)
        print(f"answered {time.monotonic() - killed_at:.1f} s after {builder.host_id} was killed, by {result['host']}")
        assert result["host"] != builder.host_id and result["host"] in farm.hosts
        assert result["cache"] in ("built", "joined")
    finally:
        builder.start()  # the host comes back for the tests after this one
        from dockyard.workers.launcher import wait_all_ready

        wait_all_ready(operator_app(farm), [builder], timeout_s=90)
