"""The Sentinel test setup of ``workers/provision_sentinel.sh``: provision it, find, kill and replace its master."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from benchmarks.harness import REPO
from dockyard.config.redis_urls import parse_sentinel_url

PROVISION = REPO / "workers" / "provision_sentinel.sh"
PROVISION_TIMEOUT_S = 180


@dataclass(frozen=True)
class SentinelSetup:
    """The provisioned setup: its URLs, master name, sentinels' password and state directory."""

    worker_url: str
    master: str
    password: str
    directory: Path

    def environment(self, db: int) -> dict[str, str]:
        """``DOCKYARD_*`` variables pointing dockyard (as the worker user) at database ``db`` through the sentinels."""
        return {
            "DOCKYARD_REDIS_URL": with_db(self.worker_url, db),
            "DOCKYARD_SENTINEL_MASTER": self.master,
            "DOCKYARD_SENTINEL_PASSWORD": self.password,
        }

    def sentinels(self) -> list[redis.Redis]:
        return [
            redis.Redis(host=host, port=port, password=self.password, socket_timeout=2, socket_connect_timeout=2)
            for host, port in parse_sentinel_url(self.worker_url).sentinels
        ]

    def master_address(self) -> tuple[str, int] | None:
        """The master the first answering sentinel names, or None."""
        for sentinel in self.sentinels():
            try:
                found = sentinel.sentinel_get_master_addr_by_name(self.master)
            except redis.RedisError:
                continue
            finally:
                sentinel.close()
            if found:
                host = found[0].decode() if isinstance(found[0], bytes) else str(found[0])
                return host, int(found[1])
        return None

    def kill_master(self) -> tuple[int, int]:
        """SIGKILL the master redis-server; return its (port, pid)."""
        address = self.master_address()
        if address is None:
            raise RuntimeError("no sentinel names a master")
        pid = int((self.directory / f"redis-{address[1]}.pid").read_text().strip())
        os.kill(pid, signal.SIGKILL)
        return address[1], pid

    def wait_new_master(self, old_port: int, timeout_s: float = 60.0) -> int:
        """Until the sentinels name another master that answers as one; return its port."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            address = self.master_address()
            if address is not None and address[1] != old_port and _is_master(address):
                return address[1]
            time.sleep(0.05)
        raise TimeoutError(f"no new master within {timeout_s:g} s of killing the one on port {old_port}")


def _is_master(address: tuple[str, int]) -> bool:
    user, password = _admin()
    client = redis.Redis(host=address[0], port=address[1], username=user, password=password, socket_timeout=2)
    try:
        role = client.role()[0]
        return (role.decode() if isinstance(role, bytes) else str(role)) == "master"
    except redis.RedisError:
        return False
    finally:
        client.close()


def _admin() -> tuple[str, str]:
    farm = Path(os.environ.get("DOCKYARD_FARM_DIR", "/var/lib/dockyard-farm"))
    return "dockyard-admin", (farm / "redis-admin.password").read_text().strip()


def with_db(url: str, db: int) -> str:
    """A sentinel URL on database ``db`` (the first part carries the database)."""
    first, sep, rest = url.partition(";")
    base, _, _ = first.rpartition("/") if first.count("/") > 2 else (first, "", "")
    return f"{base}/{db}{sep}{rest}"


def provision() -> SentinelSetup:
    """Run ``provision_sentinel.sh`` (idempotent: starts what is missing, a killed master comes back as a
    replica) and read the ``sentinel.env`` it writes."""
    completed = subprocess.run(
        ["bash", str(PROVISION)], cwd=REPO, capture_output=True, text=True, timeout=PROVISION_TIMEOUT_S
    )
    if completed.returncode != 0:
        raise RuntimeError(f"{PROVISION.name} failed:\n{completed.stderr[-3000:]}")
    values: dict[str, str] = {}
    for line in Path(completed.stdout.strip().splitlines()[-1]).read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep:
            values[name] = value
    return SentinelSetup(
        values["DOCKYARD_SENTINEL_WORKER_REDIS_URL"],
        values["DOCKYARD_SENTINEL_MASTER"], values["DOCKYARD_SENTINEL_PASSWORD"], Path(values["DOCKYARD_SENTINEL_DIR"]),
    )
