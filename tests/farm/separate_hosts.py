"""A farm of separate hosts on one machine: each build host and the caller in network and mount namespaces of their own.

The root namespace is the *control* host: it runs the farm's Redis (ACL users: admin, worker, one
team), the context store (the same users) and an htpasswd registry, new instances bound only to the
control's link-local address, on their standard ports (6379, 6380, 5000). Every other host is a
network namespace joined to the control by a veth pair (a /30 of ``169.254.<net>.0/24``), with a
route to the control's address and nothing else (no bridge, no forwarding, no default route), and a
private mount namespace whose ``/tmp`` is a tmpfs of its own: its state, cache and Docker
directories, and its copy of the farm's teams file, live there. Only the code (the repository and
the Python install, when they lie under the machine's temp directory) is bound in read-only, as a
package installed on each machine. A build host runs its own ``dockerd`` (``--bridge=none
--iptables=false --ip-masq=false``, ``--insecure-registry`` for the control's registry, data and
socket in its private ``/tmp``) and its own ``dockyard worker``. The control, as an operator with a
shell on each host, reaches a host's engine through ``/proc/<pid>/root`` of a process of that host.

Everything is removed on the way out, after a failure too (``SeparateFarm.close``); ``down`` removes
what a killed run left (namespaces and links named ``dysep-*`` / ``dys*``).

By hand, as root: ``python -m tests.farm.separate_hosts up`` (runs until Ctrl-C, printing how to
reach each host) and ``python -m tests.farm.separate_hosts down``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import requests

NETNS_PREFIX = "dysep-"  # network namespaces of these farms: dysep-<run>-<host>
WORK_DIR_PREFIX = "dockyard-separate-"  # each farm's files: <temp dir>/dockyard-separate-*
LINK_PREFIX = "dys"  # veth links in the control namespace: dys<run><host>
REDIS_PORT = 6379  # the farm's Redis on the control address
STORE_PORT = 6380  # the context store
REGISTRY_PORT = 5000  # the registry
REGISTRY_USER = "dockyard"
TEAM = "team-x"  # the farm's one team: the caller's
KEY_PREFIX = "dockyard:"  # the default: these are the farm's own Redis servers
BASE_REPOSITORY = "base/busybox:1"
BUSYBOX_TOOLS = ("sh", "ls", "cat", "echo", "sleep", "mkdir", "rm", "cp", "mv", "env", "true", "false", "test",
                 "printf", "grep", "sed", "wc", "head", "tail", "touch", "id", "ln", "chmod")
DOCKERD_FLAGS = ("--bridge=none", "--iptables=false", "--ip-masq=false")
HOST_DOCKER_SOCKET = "/tmp/docker/docker.sock"  # inside each build host
HOST_TEAMS_FILE = "/tmp/etc/teams.toml"  # the host's copy of the farm's teams file
START_TIMEOUT_S = 60.0
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's, with python3-bcrypt (workers/provision.sh installs it)
REPO_ROOT = Path(__file__).resolve().parents[2]


def run(argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """``argv`` to completion; ``CalledProcessError`` (with its stderr) if it fails."""
    return subprocess.run(list(argv), check=True, capture_output=True, text=True, **kwargs)


def wait_until(what: str, condition: Any, timeout_s: float = START_TIMEOUT_S, *, alive: Sequence[subprocess.Popen[Any]] = ()) -> None:
    """Poll ``condition()`` until it is true; ``TimeoutError`` naming ``what`` after ``timeout_s``,
    ``RuntimeError`` at once if one of ``alive`` ends meanwhile."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for process in alive:
            if process.poll() is not None:
                raise RuntimeError(f"{what}: {process.args!r} exited with {process.returncode}")
        try:
            if condition():
                return
        except Exception:  # noqa: BLE001 - not up yet, whatever the error
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{what} within {timeout_s:g} s")


def code_paths() -> list[Path]:
    """What a host needs of this machine's temp directory: the repository and the Python install, read-only."""
    temp = Path(tempfile.gettempdir()).resolve()
    wanted = sorted({Path(p).resolve() for p in (REPO_ROOT, sys.prefix, sys.base_prefix)})
    kept: list[Path] = []
    for path in wanted:
        if path.is_relative_to(temp) and not any(path.is_relative_to(each) for each in kept):
            kept.append(path)
    return kept


@dataclass
class Host:
    """A host of its own: a network namespace and a mount namespace (held by an anchor process) with a private /tmp."""

    name: str  # short name: h1, h2, caller
    netns: str
    link: str  # the control's end of the veth pair
    address: str  # the host's address on its link
    gateway: str  # the control's address on that link
    holder_dir: Path  # an empty directory of the control where the host's tmpfs is made before it moves to /tmp
    anchor: subprocess.Popen[bytes] | None = None
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def nsenter(self) -> list[str]:
        """The prefix that runs a command on this host (its network and mount namespaces)."""
        if self.anchor is None:
            raise RuntimeError(f"host {self.name} is not up")
        return ["nsenter", f"--net=/var/run/netns/{self.netns}", f"--mount=/proc/{self.anchor.pid}/ns/mnt", "--wd=/"]

    def path(self, inside: str) -> Path:
        """The control's view of ``inside`` (a path on this host), through the anchor's root."""
        if self.anchor is None:
            raise RuntimeError(f"host {self.name} is not up")
        return Path(f"/proc/{self.anchor.pid}/root") / inside.lstrip("/")

    def start(self, argv: Sequence[str], *, env: Mapping[str, str], log: Path, new_session: bool = True) -> subprocess.Popen[bytes]:
        """Start ``argv`` on this host (nsenter execs it: its pid is the command's), output to ``log``."""
        with open(log, "ab") as out:
            process = subprocess.Popen(
                [*self.nsenter(), *argv], env=dict(env), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=new_session,
            )
        self.processes.append(process)
        return process

    def run(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None, check: bool = True, timeout_s: float = 30) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` on this host to completion."""
        return subprocess.run(
            [*self.nsenter(), *argv], env=dict(env) if env is not None else minimal_env(), check=check,
            capture_output=True, text=True, timeout=timeout_s,
        )

    def put(self, inside: str, text: str, mode: int = 0o600) -> None:
        """Write a file on this host (as an operator copies one there)."""
        target = self.path(inside)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        target.chmod(mode)


def minimal_env(**extra: str) -> dict[str, str]:
    """A process environment of a fresh login: PATH with this Python's scripts, HOME and caches in the host's /tmp."""
    path = f"{Path(sys.executable).parent}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    return {"PATH": path, "HOME": "/tmp/home", "XDG_CACHE_HOME": "/tmp/cache", "LANG": "C.UTF-8", **extra}


@dataclass
class Farm:
    """What callers and the tests need to know of a running separate farm."""

    control: str  # the control's address: Redis, context store and registry
    registry: str  # host:port
    registry_password: str
    worker_redis_url: str
    worker_store_url: str
    admin_redis_url: str
    team_redis_url: str
    team_store_url: str
    team_registry_password: str
    seal_public_key: str
    seal_private_key: str
    teams_toml: str
    base_image: str
    hosts: dict[str, Host]  # build hosts by host id
    caller: Host
    engines: dict[str, str]  # build host id -> the control's Docker URL of its engine
    work_dir: Path

    def worker_env(self, host_id: str) -> dict[str, str]:
        """What the docs' recipe says a build host must set (docs/several-hosts.md), for ``host_id``."""
        host = self.hosts[host_id]
        return {
            "DOCKYARD_HOST_ID": host_id,
            "DOCKYARD_REDIS_URL": self.worker_redis_url,
            "DOCKYARD_CONTEXT_STORE_URL": self.worker_store_url,
            "DOCKYARD_REGISTRY_URL": self.registry,
            "DOCKYARD_REGISTRY_USERNAME": REGISTRY_USER,
            "DOCKYARD_REGISTRY_PASSWORD": self.registry_password,
            "DOCKYARD_SEAL_PUBLIC_KEY": self.seal_public_key,
            "DOCKYARD_SEAL_PRIVATE_KEY": self.seal_private_key,
            "DOCKYARD_TEAMS_FILE": HOST_TEAMS_FILE,
            "DOCKYARD_METRICS_BIND": host.address,
            "DOCKYARD_DOCKER_HOST": f"unix://{HOST_DOCKER_SOCKET}",
        }

    def caller_env(self) -> dict[str, str]:
        """A team's caller (docs/several-hosts.md): its team, its users' URLs, the registry with its pull login, the public key."""
        return {
            "DOCKYARD_TEAM": TEAM,
            "DOCKYARD_REDIS_URL": self.team_redis_url,
            "DOCKYARD_CONTEXT_STORE_URL": self.team_store_url,
            "DOCKYARD_REGISTRY_URL": self.registry,
            "DOCKYARD_PULL_USERNAME": TEAM,
            "DOCKYARD_PULL_PASSWORD": self.team_registry_password,
            "DOCKYARD_SEAL_PUBLIC_KEY": self.seal_public_key,
            "DOCKYARD_AUTO_BASE_IMAGE": self.base_image,
        }


class SeparateFarm:
    """Builds a farm of separate hosts step by step, and removes all of it in ``close`` (whatever got made)."""

    def __init__(self, build_hosts: int = 3, *, work_dir: Path | None = None) -> None:
        self.run_id = uuid.uuid4().hex[:4]
        self.build_hosts = build_hosts
        self.work_dir = work_dir or Path(tempfile.mkdtemp(prefix=WORK_DIR_PREFIX))
        self.own_work_dir = work_dir is None
        self.net = self._free_net()
        self.hosts: list[Host] = []
        self.control_processes: list[subprocess.Popen[bytes]] = []
        self.links: list[str] = []
        self.netns: list[str] = []
        self.engines: list[tuple[str, subprocess.Popen[bytes]]] = []  # the control's URL of each engine, its dockerd

    # ------------------------------------------------------------ network

    @staticmethod
    def _free_net() -> int:
        """A third octet of 169.254.<n>.0/24 no address of this machine uses."""
        used = run(["ip", "-o", "-4", "addr"]).stdout
        for _ in range(100):
            candidate = random.randint(100, 199)
            if f"169.254.{candidate}." not in used:
                return candidate
        raise RuntimeError("no free 169.254.<n>.0/24 for the separate hosts")

    def address(self, index: int, end: int) -> str:
        """Link ``index``'s address ``end`` (1: the control's, 2: the host's) in its /30."""
        return f"169.254.{self.net}.{4 * index + end}"

    @property
    def control(self) -> str:
        """The control's service address: its end of the first link, routed to from every host."""
        return self.address(1, 1)

    def add_host(self, name: str) -> Host:
        """A network namespace joined to the control by a veth pair, and its private mount namespace."""
        index = len(self.hosts) + 1
        host = Host(
            name=name, netns=f"{NETNS_PREFIX}{self.run_id}-{name}", link=f"{LINK_PREFIX}{self.run_id}{name}",
            address=self.address(index, 2), gateway=self.address(index, 1), holder_dir=self.work_dir / f"{name}-tmp",
        )
        self.hosts.append(host)
        run(["ip", "netns", "add", host.netns])
        self.netns.append(host.netns)
        run(["ip", "link", "add", host.link, "type", "veth", "peer", "name", "eth0", "netns", host.netns])
        self.links.append(host.link)
        run(["ip", "addr", "add", f"{host.gateway}/30", "dev", host.link])
        run(["ip", "link", "set", host.link, "up"])
        inside = ["ip", "-n", host.netns]
        run([*inside, "link", "set", "lo", "up"])
        run([*inside, "addr", "add", f"{host.address}/30", "dev", "eth0"])
        run([*inside, "link", "set", "eth0", "up"])
        if host.gateway != self.control:
            run([*inside, "route", "add", f"{self.control}/32", "via", host.gateway])
        self._private_mounts(host)
        return host

    def _private_mounts(self, host: Host) -> None:
        """The host's anchor: a process holding its mount namespace, whose /tmp is a tmpfs of its own."""
        host.holder_dir.mkdir()
        holder = str(host.holder_dir)
        steps = [f"mount -t tmpfs -o mode=1777,size=4g none {holder}"]
        temp = Path(tempfile.gettempdir()).resolve()
        for path in code_paths():  # at the same path once the tmpfs is /tmp
            inner = f"{holder}/{path.relative_to(temp)}"
            steps += [f"mkdir -p {inner}", f"mount --bind {path} {inner}", f"mount -o remount,bind,ro {inner}"]
        steps += [f"mount --move {holder} /tmp", "mkdir -p /tmp/state /tmp/cache /tmp/home /tmp/etc /tmp/docker",
                  "touch /tmp/.host-ready", "exec sleep infinity"]
        with open(self.work_dir / f"{host.name}-anchor.log", "ab") as log:
            host.anchor = subprocess.Popen(
                ["nsenter", f"--net=/var/run/netns/{host.netns}", "unshare", "--mount", "--propagation", "private",
                 "sh", "-ec", " && ".join(steps)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        anchor = host.anchor
        wait_until(f"host {host.name}'s private /tmp", lambda: host.path("/tmp/.host-ready").exists(), alive=[anchor])

    # ------------------------------------------------------------ control services

    def start_control(self) -> Farm:
        """The control's Redis, context store and registry, the farm's secrets and teams file."""
        from dockyard.config.teams import load_teams
        from dockyard.tasks.request.sealing import generate_keypair
        from dockyard.workers.redis_acl import team_users

        passwords = {who: secrets.token_hex(16) for who in ("admin", "worker", "team", "registry", "registry-team")}
        teams_toml = (
            f"[teams.{TEAM}]\nredis_password_sha256 = [\"{hashlib.sha256(passwords['team'].encode()).hexdigest()}\"]\n"
            f"push = [\"{self.control}:{REGISTRY_PORT}/{TEAM}/*\"]\n"
        )
        teams_file = self.work_dir / "teams.toml"
        teams_file.write_text(teams_toml)
        teams = load_teams(str(teams_file))

        def sha(who: str) -> str:
            return hashlib.sha256(passwords[who].encode()).hexdigest()

        farm_acl = [
            "user default off resetpass resetkeys resetchannels -@all",
            f"user dockyard-admin on #{sha('admin')} ~* &* +@all",
            f"user dockyard-worker on #{sha('worker')} ~* &* +@all -@admin +client|list",
            *team_users(teams, server="farm", key_prefix=KEY_PREFIX),
        ]
        store_acl = [
            "user default off resetpass resetkeys resetchannels -@all",
            f"user dockyard-admin on #{sha('admin')} ~* &* +@all",
            f"user dockyard-worker on #{sha('worker')} ~* resetchannels +@all -@admin -@dangerous -@pubsub +info",
            *team_users(teams, server="store", key_prefix=KEY_PREFIX),
        ]
        self._redis("redis", REDIS_PORT, farm_acl, ["--maxmemory-policy", "noeviction"])
        self._redis("context-store", STORE_PORT, store_acl, ["--maxmemory", "256mb", "--maxmemory-policy", "volatile-ttl"])
        self._registry(passwords["registry"], passwords["registry-team"])
        team_user = teams.teams[TEAM].redis_user
        public, private = generate_keypair()

        def url(user: str, who: str, port: int) -> str:
            return f"redis://{user}:{passwords[who]}@{self.control}:{port}/0"

        registry = f"{self.control}:{REGISTRY_PORT}"
        return Farm(
            control=self.control, registry=registry, registry_password=passwords["registry"],
            worker_redis_url=url("dockyard-worker", "worker", REDIS_PORT), worker_store_url=url("dockyard-worker", "worker", STORE_PORT),
            admin_redis_url=url("dockyard-admin", "admin", REDIS_PORT),
            team_redis_url=url(team_user, "team", REDIS_PORT), team_store_url=url(team_user, "team", STORE_PORT),
            team_registry_password=passwords["registry-team"], seal_public_key=public, seal_private_key=private,
            teams_toml=teams_toml, base_image=f"{registry}/{BASE_REPOSITORY}", hosts={}, caller=self.hosts[0],
            engines={}, work_dir=self.work_dir,
        )

    def _redis(self, name: str, port: int, acl: list[str], extra: list[str]) -> None:
        directory = self.work_dir / name
        directory.mkdir(mode=0o700)
        (directory / "users.acl").write_text("\n".join(acl) + "\n")
        with open(directory / "redis.log", "ab") as log:
            process = subprocess.Popen(
                ["redis-server", "--bind", self.control, "--port", str(port), "--save", "", "--appendonly", "no",
                 "--dir", str(directory), "--aclfile", str(directory / "users.acl"), *extra],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        self.control_processes.append(process)
        wait_until(f"{name} on {self.control}:{port}", lambda: self._tcp_open(port), alive=[process])

    def _tcp_open(self, port: int) -> bool:
        import socket

        with socket.create_connection((self.control, port), timeout=1):
            return True

    def _registry(self, password: str, team_password: str) -> None:
        directory = self.work_dir / "registry"
        (directory / "data").mkdir(parents=True)
        htpasswd = run(
            [SYSTEM_PYTHON, "-c",
             "import bcrypt, sys\n"
             "for user, pw in zip(sys.argv[1::2], sys.argv[2::2]):\n"
             "    print(user + ':' + bcrypt.hashpw(pw.encode(), bcrypt.gensalt(rounds=6)).decode())",
             REGISTRY_USER, password, TEAM, team_password],
        ).stdout
        (directory / "htpasswd").write_text(htpasswd)
        (directory / "config.yml").write_text(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
            f"    rootdirectory: {directory / 'data'}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: {self.control}:{REGISTRY_PORT}\n"
            f"auth:\n  htpasswd:\n    realm: dockyard-separate\n    path: {directory / 'htpasswd'}\n"
        )
        with open(directory / "registry.log", "ab") as log:
            process = subprocess.Popen(
                ["docker-registry", "serve", str(directory / "config.yml")], cwd=directory,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        self.control_processes.append(process)
        wait_until(
            "the registry", lambda: requests.get(f"http://{self.control}:{REGISTRY_PORT}/v2/", timeout=1).status_code == 401,
            alive=[process],
        )

    # ------------------------------------------------------------ build hosts

    def start_engine(self, farm: Farm, host: Host) -> tuple[str, subprocess.Popen[bytes]]:
        """The host's own dockerd (socket and data in its private /tmp); the control's URL of it."""
        process = host.start(
            ["dockerd", *DOCKERD_FLAGS, "-H", f"unix://{HOST_DOCKER_SOCKET}", "--data-root", "/tmp/docker/data",
             "--exec-root", "/tmp/docker/exec", "--pidfile", "/tmp/docker/docker.pid", "--insecure-registry", farm.registry],
            env=minimal_env(), log=self.work_dir / f"{host.name}-dockerd.log",
        )
        url = f"unix://{host.path(HOST_DOCKER_SOCKET)}"
        self.engines.append((url, process))
        return url, process

    def wait_engine(self, url: str, process: subprocess.Popen[bytes]) -> None:
        import docker

        def answers() -> bool:
            client = docker.DockerClient(base_url=url, timeout=5)
            try:
                return bool(client.ping())
            finally:
                client.close()

        wait_until(f"dockerd at {url}", answers, alive=[process])

    def push_base_image(self, farm: Farm, engine_url: str) -> None:
        """``<registry>/base/busybox:1`` made from busybox-static (as workers/provision.sh does) on one engine, pushed."""
        busybox = next(line for line in run(["dpkg", "-L", "busybox-static"]).stdout.splitlines() if line.endswith("/bin/busybox"))
        archive = self.work_dir / "busybox.tar"
        with tarfile.open(archive, "w") as tar:
            for name in ("bin", "tmp"):
                info = tarfile.TarInfo(name)
                info.type, info.mode = tarfile.DIRTYPE, 0o1777 if name == "tmp" else 0o755
                tar.addfile(info)
            tar.add(busybox, "bin/busybox")
            for tool in BUSYBOX_TOOLS:
                info = tarfile.TarInfo(f"bin/{tool}")
                info.type, info.linkname = tarfile.SYMTYPE, "busybox"
                tar.addfile(info)
        config = self.work_dir / "docker-config"
        config.mkdir(mode=0o700)
        docker_cli = ["docker", "--config", str(config), "-H", engine_url]
        run([*docker_cli, "import", "-c", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
             "-c", 'CMD ["sh"]', str(archive), farm.base_image])
        run([*docker_cli, "login", "-u", REGISTRY_USER, "--password-stdin", farm.registry], input=farm.registry_password)
        run([*docker_cli, "push", "-q", farm.base_image])
        shutil.rmtree(config)

    # ------------------------------------------------------------ teardown

    def close(self) -> None:
        """Stop the engines (their build containers removed first), kill every process of the farm (each host's,
        then the control's), remove links, namespaces and files."""
        for url, process in self.engines:
            stop_engine(url, process)
        for host in reversed(self.hosts):
            kill_netns_processes(host.netns)
            for process in [*host.processes, *([host.anchor] if host.anchor else [])]:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=10)
        for process in self.control_processes:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)
        for link in self.links:
            subprocess.run(["ip", "link", "del", link], capture_output=True, check=False)
        for netns in self.netns:
            subprocess.run(["ip", "netns", "del", netns], capture_output=True, check=False)
        if self.own_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)


def stop_engine(url: str, process: subprocess.Popen[bytes], timeout_s: float = 20) -> None:
    """Remove every container of the engine at ``url`` (a build's included), then stop its dockerd (SIGTERM, then SIGKILL)."""
    import docker

    if process.poll() is None:
        with contextlib.suppress(Exception):  # an engine that does not answer is killed below
            client = docker.DockerClient(base_url=url, timeout=10)
            try:
                for container in client.containers.list(all=True):
                    container.remove(force=True)
            finally:
                client.close()
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def kill_netns_processes(netns: str, timeout_s: float = 15) -> None:
    """SIGKILL every process in network namespace ``netns`` (its dockerd, containerd, shims, workers) and wait for them."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True, check=False)
        pids = [int(pid) for pid in found.stdout.split()]
        if found.returncode != 0 or not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


@contextlib.contextmanager
def separate_farm(
    build_hosts: int = 3, *, recipe_host: int | None = None, recipe: str | None = None, work_dir: Path | None = None,
) -> Iterator[tuple[Farm, list[Any]]]:
    """A farm of ``build_hosts`` separate build hosts (``b1``, ``b2``, ...) and a caller host, each with its worker
    running; yields the farm and the workers (``SeparateWorker``). Build host number ``recipe_host`` (1-based)
    starts its worker with ``recipe`` (the docs' shell recipe) instead of ``dockyard worker`` directly."""
    made = SeparateFarm(build_hosts, work_dir=work_dir)
    try:
        caller = made.add_host("c")
        build = [made.add_host(f"b{n}") for n in range(1, build_hosts + 1)]
        farm = made.start_control()
        farm.caller = caller
        engines = [(host, *made.start_engine(farm, host)) for host in build]  # started at once, waited for together
        for host, url, process in engines:
            made.wait_engine(url, process)
        made.push_base_image(farm, engines[0][1])
        for n, (host, url, _) in enumerate(engines, start=1):
            host_id = f"sep-{made.run_id}-{host.name}"
            farm.hosts[host_id] = host
            farm.engines[host_id] = url
            host.put(HOST_TEAMS_FILE, farm.teams_toml)
        workers = [
            SeparateWorker(farm, host_id, recipe=recipe if n == recipe_host else None)
            for n, host_id in enumerate(farm.hosts, start=1)
        ]
        for worker in workers:
            worker.start()
        app = operator_app(farm)
        from dockyard.workers.launcher import wait_all_ready

        wait_all_ready(app, workers, timeout_s=90)
        yield farm, workers
    finally:
        made.close()


class SeparateWorker:
    """A ``dockyard worker`` on its own build host (or the docs' recipe that starts one); killable like a machine."""

    def __init__(self, farm: Farm, host_id: str, *, recipe: str | None = None) -> None:
        self.farm = farm
        self.host_id = host_id
        self.host = farm.hosts[host_id]
        self.recipe = recipe
        self.log_path = farm.work_dir / f"{host_id}-worker.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> SeparateWorker:
        env = minimal_env(**self.farm.worker_env(self.host_id))
        if self.recipe is not None:
            self.host.put("/tmp/build-host.sh", self.recipe, 0o700)
            argv = ["sh", "/tmp/build-host.sh"]
        else:
            argv = [sys.executable, "-m", "dockyard.workers.cli", "worker"]
        self.process = self.host.start(argv, env=env, log=self.log_path)
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def check(self) -> None:
        if self.process is None or self.process.poll() is not None:
            raise RuntimeError(f"worker {self.host_id} exited:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL the worker with its pool and fast lane (its process group), as a machine that dies."""
        os.killpg(self.pid, signal.SIGKILL)
        assert self.process is not None
        self.process.wait()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:]) or "(no log)"


def farm_settings(farm: Farm) -> Any:
    """The settings of an operator on the control (the worker user), whatever this process's environment says."""
    from dockyard.config.settings import Settings

    saved = {name: value for name, value in os.environ.items() if name.startswith("DOCKYARD_")}
    for name in saved:
        del os.environ[name]
    try:
        return Settings(
            redis_url=farm.worker_redis_url, context_store_url=farm.worker_store_url, key_prefix=KEY_PREFIX,
            teams_file=str(farm.work_dir / "teams.toml"), host_id="control", registry_url=farm.registry,
        )
    finally:
        os.environ.update(saved)


def operator_app(farm: Farm) -> Any:
    """A Celery app of the control's operator: ping and inspect the farm's workers."""
    from dockyard.workers.app import create_app

    return create_app(farm_settings(farm))


def farm_redis(farm: Farm) -> redis.Redis:
    """The farm's Redis as the worker user, from the control."""
    return redis.Redis.from_url(farm.worker_redis_url)


# ---------------------------------------------------------------- by hand


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def cmd_up(args: argparse.Namespace) -> int:
    """Bring a separate farm up, print how to reach it, keep it until Ctrl-C or SIGTERM, then remove it."""
    signal.signal(signal.SIGTERM, _interrupt)
    with separate_farm(args.hosts) as (farm, workers):
        print(json.dumps({
            "control": farm.control, "registry": farm.registry, "work_dir": str(farm.work_dir),
            "hosts": {host_id: {"netns": host.netns, "address": host.address, "engine": farm.engines[host_id],
                                "run_on_it": " ".join(host.nsenter())} for host_id, host in farm.hosts.items()},
            "caller": {"netns": farm.caller.netns, "address": farm.caller.address, "run_on_it": " ".join(farm.caller.nsenter()),
                       "env": farm.caller_env()},
        }, indent=2), flush=True)
        print("up; Ctrl-C (or SIGTERM) removes it all", file=sys.stderr, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while all(each.process is not None and each.process.poll() is None for each in workers):
                time.sleep(1)
    return 0


def control_leftovers() -> tuple[list[int], list[Path]]:
    """The control processes (Redis servers, registry: each runs in its farm's work directory or names it) and work
    directories that killed runs left."""
    dirs = sorted(Path(tempfile.gettempdir()).glob(f"{WORK_DIR_PREFIX}*"))
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                cwd = Path(os.readlink(proc / "cwd"))
                argv = (proc / "cmdline").read_bytes().decode(errors="replace")
                if any(cwd.is_relative_to(each) or str(each) in argv for each in dirs):
                    pids.append(int(proc.name))
    return pids, dirs


def cmd_down(_: argparse.Namespace) -> int:
    """Remove what a killed run left: its namespaces' processes, its links and namespaces, its control
    services and files (run it when no separate farm is in use)."""
    names = [line.split()[0] for line in run(["ip", "netns", "list"]).stdout.splitlines() if line.startswith(NETNS_PREFIX)]
    for name in names:
        kill_netns_processes(name)
    links = re.findall(rf"^\d+: ({LINK_PREFIX}[0-9a-f]{{4}}\w+)@", run(["ip", "-o", "link"]).stdout, flags=re.M)
    for link in links:
        subprocess.run(["ip", "link", "del", link], capture_output=True, check=False)
    for name in names:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
    pids, dirs = control_leftovers()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for directory in dirs:
        shutil.rmtree(directory, ignore_errors=True)
    print(f"removed namespaces {names or 'none'}, links {links or 'none'}, control processes {pids or 'none'}, "
          f"work directories {[str(each) for each in dirs] or 'none'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.farm.separate_hosts", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="bring a separate farm up and keep it until Ctrl-C")
    up.add_argument("--hosts", type=int, default=3, help="build hosts (default 3)")
    up.set_defaults(run=cmd_up)
    sub.add_parser("down", help="remove what a killed run left").set_defaults(run=cmd_down)
    args = parser.parse_args(argv)
    result: int = args.run(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
