"""The settings object, read once from ``DOCKYARD_*`` environment variables."""

from __future__ import annotations

import functools
import os
import socket
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from dockyard.config import defaults
from dockyard.config.redis_urls import is_sentinel_url, parse_sentinel_url
from dockyard.config.teams import TEAM_NAME, Team, Teams, load_teams

TEAM_QUEUE_SEPARATOR = "@"  # a team's queue is the farm's queue name, this, then the team


class Settings(BaseSettings):
    """Everything dockyard can be told; each field is ``DOCKYARD_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="DOCKYARD_", extra="ignore")

    redis_url: str = Field(defaults.REDIS_URL, description="Redis for broker, results and cache")
    broker_url: str | None = Field(None, description="Celery broker; default redis_url")
    result_backend: str | None = Field(None, description="Celery results; default redis_url")
    cache_url: str | None = Field(None, description="Cache and coordination; default redis_url")
    sentinel_master: str = Field(
        defaults.SENTINEL_MASTER, min_length=1, description="Master name the sentinels monitor (sentinel:// URLs)"
    )
    sentinel_password: SecretStr | None = Field(None, description="Password of the sentinels themselves")
    sentinel_failover_wait_s: float = Field(
        defaults.SENTINEL_FAILOVER_WAIT_S, ge=0,
        description="dockyard's sentinel:// client retries a command through a failover this long",
    )
    key_prefix: str = Field(defaults.KEY_PREFIX, description="Prefix of dockyard's Redis keys")
    host_id: str = Field(
        default_factory=lambda: socket.gethostname(), validate_default=True,
        description=f"This build host's id (not ending in {defaults.FAST_QUEUE_SUFFIX})",
    )
    docker_host: str | None = Field(None, description="Docker engine URL; default Docker's own")
    default_namespace: str | None = Field(
        None, description="Namespace prefixed to image names without one"
    )
    auto_base_image: str = Field(defaults.AUTO_BASE_IMAGE, description="FROM of auto Dockerfiles")
    auto_install_command: str = Field(
        defaults.AUTO_INSTALL_COMMAND, description="Installs requirements.txt in auto Dockerfiles"
    )
    team: str = Field(
        defaults.TEAM, pattern=TEAM_NAME,
        description="Caller: the team it sends for (its queues and keys); its Redis user must be that team's",
    )
    teams_file: str | None = Field(
        defaults.TEAMS_FILE, description="Workers and operators: the TOML file declaring the farm's teams; unset: one team, default"
    )
    fair_share: bool = Field(
        defaults.FAIR_SHARE,
        description="Workers: poll the teams' queues in a rotation weighted by their shares; false: a fixed order, first team first",
    )
    history_max_records: int = Field(
        defaults.HISTORY_MAX_RECORDS, ge=1, description="Workers and callers: a team's build history keeps at most this many records",
    )
    history_max_age_s: float = Field(
        defaults.HISTORY_MAX_AGE_S, gt=0, description="Workers and callers: a history record is dropped this long after it finished",
    )
    dashboard_url: str = Field(
        defaults.DASHBOARD_URL, description="The dashboard's address, for links to a build's page (Prefect artifacts, the CLI)",
    )
    fair_reserve_fraction: float = Field(
        defaults.FAIR_RESERVE_FRACTION, ge=0, lt=1,
        description="Workers, with fair share and several teams: int(slots * this) of the pool's build slots are kept "
        "for the other teams (a team runs at most the rest at once); 0: none",
    )
    audit_max_entries: int = Field(defaults.AUDIT_MAX_ENTRIES, gt=0, description="The push audit stream keeps at most this many entries")
    audit_max_age_s: int = Field(defaults.AUDIT_MAX_AGE_S, gt=0, description="The push audit stream drops entries older than this")
    build_memory_bytes: int | None = Field(
        defaults.BUILD_MEMORY_BYTES, ge=0,
        description="Worker: memory of one build step in bytes (no swap); None/0: host memory / worker_concurrency * build_memory_fraction",
    )
    build_memory_fraction: float = Field(
        defaults.BUILD_MEMORY_FRACTION, gt=0, le=1,
        description="Worker: the share of the host's memory all build slots together get (the computed memory limit)",
    )
    build_cpus: float | None = Field(
        defaults.BUILD_CPUS, ge=0, description="Worker: CPUs of one build step; None/0: the host's CPUs / worker_concurrency"
    )
    build_pids: int | None = Field(
        defaults.BUILD_PIDS, ge=0, description="Worker: processes of one build; None/0: 1024"
    )
    build_cgroup_root: str = Field(
        defaults.BUILD_CGROUP_ROOT,
        description="Worker: the cgroup v1 mount where it makes and watches build cgroups; empty: none (no pids limit, buildx unlimited)",
    )
    registry_url: str | None = Field(None, description="Registry the workers log in to")
    registry_username: str | None = Field(None, description="User for registry_url")
    registry_password: SecretStr | None = Field(None, description="Password for registry_url")
    pull_username: str | None = Field(
        None, description="Caller: its own login to registry_url, to resolve base images on the fast path (never the workers' login)"
    )
    pull_password: SecretStr | None = Field(None, description="Password for pull_username")
    seal_public_key: str | None = Field(
        None, description="The farm's public key: callers seal credentials and build secrets with it"
    )
    seal_private_key: SecretStr | None = Field(
        None, description="Workers only: the private key that opens sealed credentials and secrets"
    )
    seal_ttl_s: float = Field(defaults.SEAL_TTL_S, gt=0, description="Sealed secrets expire this long after sealing")
    security_key: str | None = Field(None, description="Path of the PEM file of the key that signs task messages")
    security_certificate: str | None = Field(None, description="Path of the PEM file of security_key's certificate")
    security_cert_store: str | None = Field(None, description="Glob of trusted certificates")
    build_queue: str = Field(defaults.BUILD_QUEUE, description="Shared build queue")
    task_time_limit_s: int = Field(defaults.TASK_TIME_LIMIT_S, gt=0)
    visibility_timeout_s: int = Field(defaults.VISIBILITY_TIMEOUT_S, gt=0)
    max_redeliveries: int = Field(defaults.MAX_REDELIVERIES, ge=1)
    result_expires_s: int = Field(defaults.RESULT_EXPIRES_S, gt=0)
    transient_retries: int = Field(defaults.TRANSIENT_RETRIES, ge=0)
    transient_backoff_s: float = Field(defaults.TRANSIENT_BACKOFF_S, ge=0)
    worker_concurrency: int = Field(defaults.WORKER_CONCURRENCY, gt=0)
    fast_concurrency: int = Field(
        defaults.FAST_CONCURRENCY, ge=0, description="Threads of the host's fast lane worker; 0: no fast lane"
    )
    max_tasks_per_child: int = Field(defaults.MAX_TASKS_PER_CHILD, gt=0)
    context_max_bytes: int = Field(defaults.CONTEXT_MAX_BYTES, gt=0)
    context_ttl_s: int = Field(defaults.CONTEXT_TTL_S, gt=0)
    context_store_url: str = Field(
        defaults.CONTEXT_STORE_URL, description="The context store: a Redis of its own (bounded, volatile-ttl), not the broker's"
    )
    context_store_max_bytes: int = Field(
        defaults.CONTEXT_STORE_MAX_BYTES, gt=0,
        description="The context store's budget: provisioning (workers/provision.sh, compose.yaml) makes it its maxmemory",
    )
    context_transport: Literal["redis", "path"] = Field(
        defaults.CONTEXT_TRANSPORT, description="How contexts reach workers"
    )
    allow_host_network: bool = Field(defaults.ALLOW_HOST_NETWORK, description="Builds may use the host network")
    build_networks: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(defaults.BUILD_NETWORKS),
        description="Networks build steps may use (comma-separated; the first is the default of a request naming none); "
        "empty: none on an engine without a bridge network, else bridge",
    )
    build_network_probe: bool = Field(
        defaults.BUILD_NETWORK_PROBE,
        description="Worker: at start, one probe build step on the default build network tries to reach the farm's Redis, "
        "context store and /metrics",
    )
    build_network_probe_image: str | None = Field(
        defaults.BUILD_NETWORK_PROBE_IMAGE, description="Worker: the FROM of the probe step (it needs nc or python3); default auto_base_image"
    )
    accept_build_network_reaching_farm: bool = Field(
        defaults.ACCEPT_BUILD_NETWORK_REACHING_FARM,
        description="Worker: start even when the probe step reaches the farm's addresses (logged as an error, exported as a metric)",
    )
    allow_local_build_io: bool = Field(
        defaults.ALLOW_LOCAL_BUILD_IO, description="buildx may use local outputs, caches and build contexts"
    )
    allow_buildx_entitlements: bool = Field(defaults.ALLOW_BUILDX_ENTITLEMENTS, description="buildx `allow` entitlements")
    allow_buildx_builder: bool = Field(defaults.ALLOW_BUILDX_BUILDER, description="buildx `builder` choice")
    allow_ssh_agent: bool = Field(defaults.ALLOW_SSH_AGENT, description="buildx `ssh` with the worker's agent")
    accept_clear_credentials: bool = Field(
        defaults.ACCEPT_CLEAR_CREDENTIALS, description="Workers accept clear credentials in push messages"
    )
    shared_context_root: str | None = Field(
        defaults.SHARED_CONTEXT_ROOT, description="Worker: directory under which a shared-filesystem context_path may lie; unset refuses them"
    )
    digest_cache_dir: str = Field(
        default_factory=lambda: user_cache_dir(defaults.DIGEST_CACHE_SUBDIR),
        description="Caller: directory of the per-file digest cache (one file per context root); empty keeps none",
    )
    cache_ttl_s: int = Field(defaults.CACHE_TTL_S, gt=0)
    lease_s: float = Field(defaults.LEASE_S, gt=0)
    wait_wake_s: float = Field(defaults.WAIT_WAKE_S, gt=0, description="A waiter looks anyway this often (a dead owner)")
    placement: bool = Field(
        defaults.PLACEMENT, description="Send a build to the live host that built its lineage last, unless it is busy"
    )
    heartbeat_interval_s: float = Field(defaults.HEARTBEAT_INTERVAL_S, gt=0)
    heartbeat_ttl_s: float = Field(defaults.HEARTBEAT_TTL_S, gt=0)
    disk_budget_bytes: int = Field(defaults.DISK_BUDGET_BYTES, ge=0)
    disk_check_interval_s: float = Field(defaults.DISK_CHECK_INTERVAL_S, gt=0)
    metrics_port: int = Field(defaults.METRICS_PORT, ge=0, le=65535, description="Port of the worker's /metrics; 0 picks one")
    metrics_bind: str = Field(defaults.METRICS_BIND, description="Address /metrics listens on")
    farm_dir: str = Field(defaults.FARM_DIR, description="State of the local farm (dockyard up)")
    state_dir: str | None = Field(
        defaults.STATE_DIR, description="Pid files and logs of the workers `dockyard up` starts; default <farm_dir>/workers"
    )

    @field_validator("build_networks", mode="before")
    @classmethod
    def _build_networks_split(cls, value: object) -> object:
        if isinstance(value, str):
            return [name.strip() for name in value.split(",") if name.strip()]
        return value

    @field_validator("build_queue")
    @classmethod
    def _build_queue_names_no_team(cls, value: str) -> str:
        if not value or TEAM_QUEUE_SEPARATOR in value:
            raise ValueError(
                f"the build queue {value!r} must be a non-empty name without {TEAM_QUEUE_SEPARATOR!r} "
                "(each team's queue is <build_queue>@<team>, and a team's Redis user may push to its own only)"
            )
        return value

    @field_validator("host_id")
    @classmethod
    def _host_id_is_not_a_fast_lane(cls, value: str) -> str:
        if not value:
            raise ValueError("a host id may not be empty")
        if TEAM_QUEUE_SEPARATOR in value:
            raise ValueError(f"a host id may not hold {TEAM_QUEUE_SEPARATOR!r} (it names a queue's team)")
        if value.endswith(defaults.FAST_QUEUE_SUFFIX):
            raise ValueError(
                f"host id {value!r} ends in {defaults.FAST_QUEUE_SUFFIX!r}: its host queue "
                f"{host_queue(value)} would be the fast queue of host {value[:-len(defaults.FAST_QUEUE_SUFFIX)]!r}"
            )
        return value

    @model_validator(mode="after")
    def _time_limit_below_visibility(self) -> Settings:
        if self.task_time_limit_s >= self.visibility_timeout_s:
            raise ValueError(
                f"task_time_limit_s (DOCKYARD_TASK_TIME_LIMIT_S, {self.task_time_limit_s}) must be below "
                f"visibility_timeout_s (DOCKYARD_VISIBILITY_TIMEOUT_S, {self.visibility_timeout_s}), "
                "or a running task is delivered again to another worker"
            )
        return self

    @model_validator(mode="after")
    def _signing_all_or_nothing(self) -> Settings:
        given = [self.security_key, self.security_certificate, self.security_cert_store]
        if any(given) and not all(given):
            raise ValueError(
                "signed messages need security_key, security_certificate and security_cert_store together"
            )
        return self

    @model_validator(mode="after")
    def _sentinel_urls_parse(self) -> Settings:
        for url in (self.effective_broker_url, self.effective_result_backend, self.effective_cache_url, self.context_store_url):
            if is_sentinel_url(url):
                parse_sentinel_url(url)  # a ValueError here is a validation error naming the URL's fault
        return self

    @property
    def sentinel_kwargs(self) -> dict[str, object]:
        """How to reach the sentinels themselves (redis-py's and kombu's ``sentinel_kwargs``)."""
        return sentinel_kwargs(self.sentinel_password.get_secret_value() if self.sentinel_password else None)

    @property
    def signs_messages(self) -> bool:
        return bool(self.security_key)

    @property
    def effective_broker_url(self) -> str:
        return self.broker_url or self.redis_url

    @property
    def effective_result_backend(self) -> str:
        return self.result_backend or self.redis_url

    @property
    def effective_cache_url(self) -> str:
        return self.cache_url or self.redis_url

    @property
    def declared_teams(self) -> Teams:
        """The teams of ``teams_file`` (``InvalidTeams`` if it does not read), or the one ``default`` team."""
        return load_teams(self.teams_file)

    def team_named(self, name: str | None) -> Team | None:
        return self.declared_teams.get(name)

    @property
    def host_queue(self) -> str:
        return host_queue(self.host_id)

    @property
    def fast_queue(self) -> str:
        return fast_queue(self.host_id)


def sentinel_kwargs(password: str | None) -> dict[str, object]:
    """Connection options for the sentinels: short timeouts, and their password if they have one."""
    found: dict[str, object] = {
        "socket_timeout": defaults.SENTINEL_SOCKET_TIMEOUT_S,
        "socket_connect_timeout": defaults.SENTINEL_SOCKET_TIMEOUT_S,
    }
    if password is not None:
        found["password"] = password
    return found


def user_cache_dir(subdirectory: str) -> str:
    """``subdirectory`` of the user's cache directory: ``$XDG_CACHE_HOME``, else ``~/.cache``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, subdirectory)


def host_queue(host_id: str) -> str:
    """Name of the queue only the worker of ``host_id`` consumes."""
    return f"{defaults.HOST_QUEUE_PREFIX}{host_id}"


def team_queue(queue: str, team: str) -> str:
    """``queue`` of ``team``: what a team's Redis user may push to, and how a worker knows the sender."""
    return f"{queue}{TEAM_QUEUE_SEPARATOR}{team}"


def team_queues(settings: Settings, queue: str) -> list[str]:
    """``queue`` of every team declared on the farm."""
    return [team_queue(queue, team) for team in settings.declared_teams.names]


def queue_team(queue: str | None) -> str | None:
    """The team a team queue belongs to (None for any other name)."""
    if not queue or TEAM_QUEUE_SEPARATOR not in queue:
        return None
    return queue.rpartition(TEAM_QUEUE_SEPARATOR)[2] or None


def farm_queue(queue: str) -> str:
    """The farm's queue name of a team queue (its team dropped)."""
    return queue.rpartition(TEAM_QUEUE_SEPARATOR)[0] if TEAM_QUEUE_SEPARATOR in queue else queue


def fast_queue(host_id: str) -> str:
    """Name of the queue of ``host_id``'s fast lane (cheap work, never behind builds)."""
    return f"{host_queue(host_id)}{defaults.FAST_QUEUE_SUFFIX}"


class InvalidSettings(ValueError):
    """The ``DOCKYARD_*`` settings do not validate; the message names each variable at fault."""

    @classmethod
    def from_validation_error(cls, error: ValidationError) -> InvalidSettings:
        """One line per fault, joined: ``DOCKYARD_<NAME>: what is wrong (got <value>)``."""
        return cls("; ".join(describe_fault(fault) for fault in error.errors(include_url=False)))


def describe_fault(fault: ErrorDetails) -> str:
    """One fault of a settings ``ValidationError``, naming its variable (and its value, unless it may hold a secret)."""
    message = fault["msg"].removeprefix("Value error, ")
    location = [part for part in fault["loc"] if isinstance(part, str)]
    if not location:
        return message  # a check across settings: its message names them
    name = location[0]
    field = Settings.model_fields.get(name)
    if field is None:
        return f"{name}: {message}"
    shown = f" (got {fault['input']!r})" if field.annotation in (int, float, bool) and isinstance(fault["input"], str) else ""
    return f"DOCKYARD_{name.upper()}: {message}{shown}"


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read from the environment once."""
    return Settings()
