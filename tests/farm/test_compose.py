"""compose.yaml runs: its images built offline, the farm brought up with compose v2, the example
built and pushed through its worker by a caller on the host, and everything brought down again.

The compose farm runs on an engine of this test's own (``dockerd --bridge=none --iptables=false``,
its data root in the farm's state directory, so the images built once stay for later runs and
fresh clones), with ``compose.host-network.yaml`` (no bridge may be made here) on free loopback
ports: it never touches the local farm's Redis, store, registry or engines.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path

import docker
import pytest
import redis
import requests
import yaml

from dockyard.config import defaults
from tests.farm.farm_helpers import production_environment

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILES = ["-f", str(ROOT / "compose.yaml"), "-f", str(ROOT / "compose.host-network.yaml")]
PROJECT = "dockyard-compose-test"
FARM_DIR = Path(os.environ.get("DOCKYARD_FARM_DIR", defaults.FARM_DIR))
ENGINE_NAME = "dockyard-compose-test"  # the engine's socket, exec root and pid file under /run
ENGINE_DATA = FARM_DIR / "compose-engine"  # kept between runs: the farm's images and their layers
IMAGES_CACHE = FARM_DIR / "compose-images"  # kept between runs: build.sh's base tarball and packages
TEAM = "compose-team"
HOST_ID = "compose-builder-1"
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's, with python3-bcrypt (workers/provision.sh installs it)


def compose_tool() -> list[str]:
    """``docker compose``, compose v2 (``workers/provision.sh`` installs it)."""
    docker_cli = shutil.which("docker")
    assert docker_cli, "the docker CLI is missing: run `bash workers/run.sh test`"
    version = subprocess.run([docker_cli, "compose", "version", "--short"], capture_output=True, text=True, timeout=30)
    assert version.returncode == 0 and version.stdout.strip().lstrip("v").startswith("2."), (
        f"`docker compose` is not compose v2 ({version.stdout.strip() or version.stderr.strip()}): "
        "run `bash workers/run.sh test`"
    )
    return [docker_cli, "compose"]


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports free right now."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for each in sockets:
            each.bind(("127.0.0.1", 0))
        return [each.getsockname()[1] for each in sockets]
    finally:
        for each in sockets:
            each.close()


def wait_for(condition: object, what: str, timeout_s: float) -> None:
    """Poll ``condition()`` until it is true; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {timeout_s:g} s")
        time.sleep(0.2)


# ------------------------------------------------------------------ the engine


@dataclass(frozen=True)
class Engine:
    url: str
    client: docker.DockerClient


def _live_dockerd(pidfile: Path) -> int | None:
    try:
        pid = int(pidfile.read_text().strip())
        return pid if Path(f"/proc/{pid}/comm").read_text().strip() == "dockerd" else None
    except (OSError, ValueError):
        return None


def _stop_dockerd(pid: int) -> None:
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 60
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    if Path(f"/proc/{pid}").exists():
        os.kill(pid, signal.SIGKILL)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    """A Docker engine of this test's own, without a bridge; stopped afterwards (its data root stays)."""
    dockerd = shutil.which("dockerd")
    assert dockerd, "dockerd is missing: run `bash workers/run.sh test`"
    sock, pidfile = Path(f"/run/{ENGINE_NAME}.sock"), Path(f"/run/{ENGINE_NAME}.pid")
    if (left := _live_dockerd(pidfile)) is not None:  # left by a run that was killed
        _stop_dockerd(left)
    _remove_exec_root(Path(f"/run/{ENGINE_NAME}"))
    ENGINE_DATA.mkdir(parents=True, exist_ok=True)
    url = f"unix://{sock}"
    log = (tmp_path / "dockerd.log").open("w")
    process = subprocess.Popen(
        [dockerd, "--bridge=none", "--iptables=false", "--ip-masq=false", "-H", url,
         "--data-root", str(ENGINE_DATA), "--exec-root", f"/run/{ENGINE_NAME}", "--pidfile", str(pidfile)],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    clients: list[docker.DockerClient] = []
    try:
        def answers() -> bool:
            assert process.poll() is None, f"dockerd exited: {(tmp_path / 'dockerd.log').read_text()[-2000:]}"
            try:
                clients.append(docker.DockerClient(base_url=url, timeout=120))
            except docker.errors.DockerException:
                return False
            return True

        wait_for(answers, "the test's dockerd did not answer", 120)
        yield Engine(url, clients[0])
    finally:
        for client in clients:
            client.close()
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)
        log.close()
        _remove_exec_root(Path(f"/run/{ENGINE_NAME}"))


def _remove_exec_root(exec_root: Path) -> None:
    """The engine's exec root, with the handle of its network namespace that dockerd 20.10 leaves mounted."""
    handle = exec_root / "netns" / "default"
    if os.path.ismount(handle):
        subprocess.run(["umount", str(handle)], check=True, timeout=30)
    shutil.rmtree(exec_root, ignore_errors=True)


# ------------------------------------------------------------------ the farm's files


@dataclass(frozen=True)
class ComposeFarm:
    """The compose farm's settings (its environment) and what its caller needs."""

    environment: dict[str, str]
    redis_port: int
    store_port: int
    registry: str
    metrics_port: int
    caller_password: str
    registry_password: str

    def run(self, *args: str, timeout_s: float = 180, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([*compose_tool(), "-p", PROJECT, *COMPOSE_FILES, *args], capture_output=True,
                              text=True, timeout=timeout_s, env=self.environment, cwd=ROOT)
        if check:
            assert done.returncode == 0, f"docker compose {' '.join(args)}: {done.stderr[-3000:]}"
        return done


def htpasswd_line(user: str, password: str) -> str:
    """``user:<bcrypt hash>``, made as provisioning makes the farm's (Debian's python3-bcrypt)."""
    made = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import bcrypt, sys; print(bcrypt.hashpw(sys.stdin.read().encode(), bcrypt.gensalt(rounds=6)).decode())"],
        input=password, capture_output=True, text=True, timeout=30,
    )
    assert made.returncode == 0, f"python3-bcrypt is missing: run `bash workers/run.sh test` ({made.stderr[-500:]})"
    return f"{user}:{made.stdout.strip()}\n"


def farm_files(directory: Path, engine: Engine) -> ComposeFarm:
    """A teams file (one team, the callers'), an htpasswd file (the workers' login) and the variables."""
    redis_port, store_port, registry_port, metrics_port, flower_port = free_ports(5)
    caller_password, registry_password = secrets.token_hex(12), secrets.token_hex(12)
    registry = f"127.0.0.1:{registry_port}"
    teams = directory / "teams.toml"
    teams.write_text(
        f'[teams.{TEAM}]\nredis_password_sha256 = ["{sha256(caller_password.encode()).hexdigest()}"]\n'
        f'push = ["{registry}/{TEAM}/*"]\n'
    )
    htpasswd = directory / "registry.htpasswd"
    htpasswd.write_text(htpasswd_line("dockyard", registry_password))
    environment = {
        **production_environment(),
        "DOCKER_HOST": engine.url,
        "DOCKYARD_HOST_ID": HOST_ID,
        "DOCKYARD_REDIS_PASSWORD": secrets.token_hex(12),
        "DOCKYARD_CONTEXT_STORE_PASSWORD": secrets.token_hex(12),
        "DOCKYARD_REGISTRY_USERNAME": "dockyard",
        "DOCKYARD_REGISTRY_PASSWORD": registry_password,
        "DOCKYARD_REGISTRY_HTPASSWD": str(htpasswd),
        "DOCKYARD_TEAMS_FILE": str(teams),
        "DOCKYARD_DOCKER_SOCKET": engine.url.removeprefix("unix://"),
        "DOCKYARD_REDIS_PORT": str(redis_port),
        "DOCKYARD_CONTEXT_STORE_PORT": str(store_port),
        "DOCKYARD_REGISTRY_PORT": str(registry_port),
        "DOCKYARD_METRICS_PORT": str(metrics_port),
        "DOCKYARD_FLOWER_PORT": str(flower_port),
    }
    environment.pop("DOCKYARD_FARM_DIR", None)
    return ComposeFarm(environment, redis_port, store_port, registry, metrics_port, caller_password, registry_password)


def caller_environment(farm: ComposeFarm, directory: Path) -> dict[str, str]:
    """A caller of the team on this host: the team's Redis users, its team, the registry; nothing of the workers'."""
    return {
        **production_environment(),
        "DOCKYARD_TEAM": TEAM,
        "DOCKYARD_REDIS_URL": f"redis://dockyard-team-{TEAM}:{farm.caller_password}@127.0.0.1:{farm.redis_port}/0",
        "DOCKYARD_CONTEXT_STORE_URL": f"redis://dockyard-team-{TEAM}:{farm.caller_password}@127.0.0.1:{farm.store_port}/0",
        "DOCKYARD_REGISTRY_URL": farm.registry,
        "DOCKYARD_DIGEST_CACHE_DIR": str(directory / "digests"),
    }


def push_base_image(engine: Engine, farm: ComposeFarm, directory: Path) -> str:
    """A busybox base image made here (as provisioning makes the farm's), pushed to the compose registry."""
    busybox = Path("/bin/busybox")
    found = subprocess.run(["dpkg", "-L", "busybox-static"], capture_output=True, text=True)
    for line in found.stdout.splitlines():
        if line.endswith("/bin/busybox"):
            busybox = Path(line)
            break
    assert busybox.exists(), "busybox-static is missing: run `bash workers/run.sh test`"
    archive = directory / "busybox.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(busybox, arcname="bin/busybox")
        for tool in ("sh", "cat", "echo"):
            link = tarfile.TarInfo(f"bin/{tool}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
    reference = f"{farm.registry}/base/busybox:1"
    engine.client.api.import_image_from_data(archive.read_bytes(), repository=reference.rsplit(":", 1)[0], tag="1")
    login = {"username": "dockyard", "password": farm.registry_password}
    events = list(engine.client.api.push(reference, auth_config=login, stream=True, decode=True))
    assert not any("error" in event for event in events), events
    engine.client.images.remove(reference)  # the build pulls it from the registry, as on a new host
    return reference


def dockyard(*args: str, environment: dict[str, str], timeout_s: float = 180) -> dict[str, object]:
    """``dockyard ARGS...`` run as a program; its JSON result."""
    done = subprocess.run([str(ROOT / ".venv" / "bin" / "dockyard"), *args], capture_output=True, text=True,
                          timeout=timeout_s, env=environment, cwd=ROOT)
    assert done.returncode == 0, f"dockyard {' '.join(args)}: {done.stderr[-3000:]}"
    result: dict[str, object] = json.loads(done.stdout)
    return result


def project_containers(engine: Engine) -> list[str]:
    return [each.name for each in engine.client.containers.list(
        all=True, filters={"label": f"com.docker.compose.project={PROJECT}"})]


def project_volumes(engine: Engine) -> list[str]:
    return [each.name for each in engine.client.volumes.list(filters={"label": f"com.docker.compose.project={PROJECT}"})]


# ------------------------------------------------------------------ the test


@pytest.mark.timeout(900)  # the first build of the images (a Debian base, three images) takes minutes
def test_the_compose_farm_builds_offline_comes_up_builds_and_pushes_the_example_and_goes_away(
    engine: Engine, tmp_path: Path,
) -> None:
    figures: dict[str, float] = {}
    started = time.monotonic()
    built = subprocess.run(["bash", str(ROOT / "workers" / "images" / "build.sh")], capture_output=True, text=True,
                           timeout=840, env={**os.environ, "DOCKER_HOST": engine.url, "DOCKYARD_IMAGES_CACHE": str(IMAGES_CACHE)})
    figures["images_s"] = time.monotonic() - started
    assert built.returncode == 0, built.stderr[-3000:]
    print("".join(line + "\n" for line in built.stderr.splitlines() if line.startswith("images: ")), end="")
    assert built.stdout.split() == [
        "dockyard-base:bookworm", "dockyard-redis:latest", "dockyard-registry:latest", "dockyard-worker:latest"]

    farm = farm_files(tmp_path, engine)
    farm.run("down", "--volumes", "--remove-orphans")  # from nothing, whatever a killed run left
    assert not project_containers(engine) and not project_volumes(engine)
    networks_before = sorted(each.name for each in engine.client.networks.list())
    made: list[str] = []
    try:
        started = time.monotonic()
        farm.run("up", "--detach", "--wait", "--wait-timeout", "120")
        figures["up_s"] = time.monotonic() - started

        # no bridge: every service on the host's network (the ACL maker on none), no network made
        modes = {each.name: each.attrs["HostConfig"]["NetworkMode"] for each in engine.client.containers.list(
            all=True, filters={"label": f"com.docker.compose.project={PROJECT}"})}
        assert set(modes.values()) <= {"host", "none"}, modes
        assert sorted(each.name for each in engine.client.networks.list()) == networks_before

        # Redis admits no anonymous client; the team's caller user logs in
        with pytest.raises(redis.exceptions.AuthenticationError):
            redis.Redis(port=farm.redis_port, socket_timeout=5).ping()
        caller = caller_environment(farm, tmp_path)
        assert redis.Redis.from_url(caller["DOCKYARD_REDIS_URL"], socket_timeout=5).ping()

        base = push_base_image(engine, farm, tmp_path)
        made.append(base)
        repository = f"{farm.registry}/{TEAM}/example"
        started = time.monotonic()
        build = dockyard("build", repository, str(ROOT / "workers" / "example"), "--build-arg", f"BASE={base}",
                         "-t", "v1", environment=caller)
        made.append(f"{repository}:v1")
        push = dockyard("push", repository, "-t", "v1", environment=caller)
        figures["build_and_push_s"] = time.monotonic() - started
        assert build["host"] == HOST_ID and build["cache"] == "built", build
        assert push["host"] == HOST_ID, push
        served = requests.head(
            f"http://{farm.registry}/v2/{TEAM}/example/manifests/v1", timeout=10, auth=("dockyard", farm.registry_password),
            headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
        )
        assert served.status_code == 200 and served.headers["Docker-Content-Digest"] == push["digest"]
        # the pushed image is the one the compose worker built, in its engine
        assert engine.client.images.get(f"{repository}:v1").id == build["image_id"]

        # /metrics listens where the settings say (loopback by default) and the host record says so
        worker_env = {**production_environment(), "DOCKYARD_TEAMS_FILE": farm.environment["DOCKYARD_TEAMS_FILE"],
                      "DOCKYARD_REDIS_URL": f"redis://dockyard-worker:{farm.environment['DOCKYARD_REDIS_PASSWORD']}"
                                            f"@127.0.0.1:{farm.redis_port}/0"}
        done = subprocess.run([str(ROOT / ".venv" / "bin" / "dockyard"), "hosts", "--json"], capture_output=True,
                              text=True, timeout=60, env=worker_env, cwd=ROOT)
        assert done.returncode == 0, done.stderr[-2000:]
        records = {row["host"]: row for row in json.loads(done.stdout)}
        assert records[HOST_ID]["metrics"] == f"http://127.0.0.1:{farm.metrics_port}/metrics", records
        assert "dockyard" in requests.get(records[HOST_ID]["metrics"], timeout=10).text

        started = time.monotonic()
        farm.run("down", "--volumes")
        figures["down_s"] = time.monotonic() - started
        assert not project_containers(engine), "containers left after `docker compose down`"
        assert not project_volumes(engine), "volumes left after `docker compose down --volumes`"
        with pytest.raises(redis.exceptions.ConnectionError):
            redis.Redis(port=farm.redis_port, socket_timeout=5).ping()
    finally:
        farm.run("down", "--volumes", "--remove-orphans", check=False)
        for reference in made:
            try:
                engine.client.images.remove(reference, force=True)
            except docker.errors.ImageNotFound:
                pass
        print("compose figures: " + ", ".join(f"{name} {value:.1f}" for name, value in figures.items()))


# ------------------------------------------------------------------ the file itself


def resolved(environment: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*compose_tool(), "-f", str(ROOT / "compose.yaml"), "config"], capture_output=True,
                          text=True, timeout=60, env=environment, cwd=ROOT)


REQUIRED = {
    "DOCKYARD_HOST_ID": "builder-9", "DOCKYARD_REDIS_PASSWORD": "p1", "DOCKYARD_CONTEXT_STORE_PASSWORD": "p2",
    "DOCKYARD_REGISTRY_USERNAME": "u", "DOCKYARD_REGISTRY_PASSWORD": "p3", "DOCKYARD_TEAMS_FILE": str(ROOT / "pyproject.toml"),
}


def test_compose_file_validates_and_names_each_missing_variable() -> None:
    environment = {**production_environment(), **REQUIRED}
    assert resolved(environment).returncode == 0, resolved(environment).stderr
    for name in REQUIRED:
        missing = resolved({k: v for k, v in environment.items() if k != name})
        assert missing.returncode != 0 and name in missing.stderr, (name, missing.stderr)


def test_the_workers_reach_what_they_need_where_it_means_the_same_inside_and_out() -> None:
    done = resolved({**production_environment(), **REQUIRED})
    services = yaml.safe_load(done.stdout)["services"]
    redis_command = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in redis_command and "--maxmemory-policy noeviction" in redis_command
    assert "--aclfile /acl/farm.acl" in redis_command
    store_command = " ".join(services["contexts"]["command"])
    assert "--maxmemory $$((BUDGET / 8 * 7))" in store_command and "--maxmemory-policy volatile-ttl" in store_command
    assert services["contexts"]["environment"]["BUDGET"] == "2147483648", "the default budget, 2 GiB"
    worker = services["worker"]
    environment = worker["environment"]
    assert worker["network_mode"] == "host", "the engine it drives is the host's: addresses mean the same to both"
    assert environment["DOCKYARD_HOST_ID"] == "builder-9"
    assert environment["DOCKYARD_REGISTRY_URL"] == "127.0.0.1:5000"
    assert environment["DOCKYARD_CONTEXT_STORE_URL"] == "redis://dockyard-worker:p2@127.0.0.1:6380/0"
    assert environment["DOCKYARD_REDIS_URL"] == "redis://dockyard-worker:p1@127.0.0.1:6379/0"
    assert environment["DOCKYARD_METRICS_BIND"] == defaults.METRICS_BIND
    assert any(str(volume.get("target")) == "/var/run/docker.sock" for volume in worker["volumes"])
    assert {name: dep["condition"] for name, dep in worker["depends_on"].items()} == {
        "redis": "service_healthy", "contexts": "service_healthy", "registry": "service_healthy"}
    for name in ("redis", "contexts", "registry"):
        assert all(port["host_ip"] == "127.0.0.1" for port in services[name]["ports"]), services[name]["ports"]
        assert services[name]["depends_on" if name != "registry" else "healthcheck"]
    assert "flower" in " ".join(services["flower"]["command"])
