"""Helpers for the unit tests: a Settings object with explicit values, no farm behind it."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path
from typing import Any

from dockyard.config.settings import Settings

# Nothing listens on port 1: a test that reaches for real Redis fails at once instead of using a farm.
NO_REDIS_URL = "redis://127.0.0.1:1/0"
# The unit tests' per-file digest cache: never the user's cache directory.
UNIT_DIGEST_CACHE_DIR = tempfile.mkdtemp(prefix="dockyard-unit-digests-")
atexit.register(shutil.rmtree, UNIT_DIGEST_CACHE_DIR, True)


def make_settings(**overrides: Any) -> Settings:
    """Settings for unit tests, explicit for every value the tested modules read.

    ``tests/farm/conftest.py`` exports the farm's ``DOCKYARD_*`` variables when it is
    imported; explicit values here win over them.
    """
    values: dict[str, Any] = {
        "redis_url": NO_REDIS_URL,
        "key_prefix": "unit:",
        "host_id": "h1",
        "default_namespace": None,
        "seal_public_key": None,
        "seal_private_key": None,
        "accept_clear_credentials": False,
        "registry_url": None,
        "registry_username": None,
        "registry_password": None,
        "security_key": None,
        "security_certificate": None,
        "security_cert_store": None,
        "task_time_limit_s": 50,
        "visibility_timeout_s": 100,
        "max_redeliveries": 3,
        "cache_ttl_s": 600,
        "context_ttl_s": 300,
        "context_max_bytes": 10 * 1024**2,
        "lease_s": 3.0,
        "heartbeat_interval_s": 1.0,
        "heartbeat_ttl_s": 5.0,
        "shared_context_root": None,
        "build_networks": [],
        "context_transport": "redis",
        "allow_host_network": False,
        "allow_local_build_io": False,
        "allow_buildx_entitlements": False,
        "allow_buildx_builder": False,
        "allow_ssh_agent": False,
        "broker_url": None,
        "result_backend": None,
        "cache_url": None,
        "digest_cache_dir": UNIT_DIGEST_CACHE_DIR,
        "team": "default",
        "teams_file": None,
        "pull_username": None,
        "pull_password": None,
    }
    values.update(overrides)
    return Settings(**values)


def write_teams(directory: Path, teams: dict[str, list[str]]) -> str:
    """A teams file in ``directory`` declaring each team with its ``push`` patterns; its path."""
    path = directory / "teams.toml"
    path.write_text("".join(
        f"[teams.{name}]\npush = [{', '.join(repr(pattern) for pattern in push)}]\n\n" for name, push in teams.items()
    ))
    return str(path)


class Clock:
    """A wall clock that moves only when told; fakeredis reads ``time.time`` for expiry."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
