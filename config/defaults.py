"""Named defaults of the settings, one place, one comment each.

The rule: a name here is the default of exactly one setting of
``dockyard.config.settings.Settings`` (a test holds it to that). A module's
own tuning constants, which no setting changes, live beside their user,
at the top of that module with a one-line comment (as dramatiq and httpx do).
"""

from __future__ import annotations

from typing import Literal

REDIS_URL = "redis://127.0.0.1:6379/0"  # broker, result backend and cache unless set apart
BUILD_QUEUE = "dockyard.build"  # shared queue every worker consumes
HOST_QUEUE_PREFIX = "dockyard.host."  # + host id: the queue only that host consumes
SENTINEL_MASTER = "dockyard"  # name the sentinels monitor the master under (sentinel:// URLs)
SENTINEL_FAILOVER_WAIT_S = 60.0  # a sentinel:// client retries a command this long: a failover takes down-after (30 s) + election
SENTINEL_SOCKET_TIMEOUT_S = 5.0  # a sentinel that does not answer within this is skipped for the next
KEY_PREFIX = "dockyard:"  # prefix of every key dockyard writes to Redis
AUTO_BASE_IMAGE = "python:3.11-slim"  # FROM line of dockerfile="auto"
AUTO_INSTALL_COMMAND = "pip install -r"  # RUN line for requirements.txt of dockerfile="auto"
TASK_TIME_LIMIT_S = 1800  # hard limit of one build or push
VISIBILITY_TIMEOUT_S = 3600  # unacked message redelivered after this; above the time limit
MAX_REDELIVERIES = 3  # a message whose worker died this many times fails instead of running again
RESULT_EXPIRES_S = 7 * 24 * 3600  # results outlive the redelivery window
TRANSIENT_RETRIES = 3  # retries of transient registry or engine errors
TRANSIENT_BACKOFF_S = 2.0  # first retry delay, doubled each retry
WORKER_CONCURRENCY = 2  # builds one worker runs at once
FAST_CONCURRENCY = 4  # threads of a host's fast lane (cheap work: hits, tags, cached pushes); 0: no fast lane
FAST_QUEUE_SUFFIX = ".fast"  # a host's fast queue is its host queue plus this
MAX_TASKS_PER_CHILD = 100  # a pool process is replaced after this many tasks, bounding its memory
FARM_DIR = "/var/lib/dockyard-farm"  # local farm state: registry, engines, farm.env
STATE_DIR = None  # pid files and logs of `dockyard up` workers; None: <farm_dir>/workers
CONTEXT_MAX_BYTES = 1024**3  # largest packed build context accepted
CONTEXT_TTL_S = 24 * 3600  # a context in the Redis store expires this long after its last use
CONTEXT_STORE_URL = "redis://127.0.0.1:6380/0"  # the context store: a Redis of its own, never the broker's
CONTEXT_STORE_MAX_BYTES = 2 * 1024**3  # the context store's budget (its maxmemory, volatile-ttl); provisioning sets it
CACHE_TTL_S = 7 * 24 * 3600  # a cache entry and image location expire this long after writing
LEASE_S = 20.0  # a build lease expires this long after its last renewal
HEARTBEAT_INTERVAL_S = 2.0  # how often a worker refreshes its host record
HEARTBEAT_TTL_S = 10.0  # a host whose record is older than this is dead
DISK_BUDGET_BYTES = 20 * 1024**3  # dockyard-built images one host keeps (layers counted once); 0: no budget
DISK_CHECK_INTERVAL_S = 60.0  # a worker checks its host's disk budget this often (and after each build)
METRICS_PORT = 9808  # port of a worker's /metrics; 0 picks a free one
METRICS_BIND = "127.0.0.1"  # address /metrics listens on
ALLOW_HOST_NETWORK = False  # builds may not use the host's network (network_mode/network="host")
BUILD_NETWORKS: tuple[str, ...] = ()  # build steps' networks; empty: "none" on an engine without a bridge network, else "bridge"
BUILD_NETWORK_PROBE = True  # a worker probes at start whether its default build network reaches the farm's addresses
BUILD_NETWORK_PROBE_IMAGE = None  # the probe step's FROM; None: auto_base_image
ACCEPT_BUILD_NETWORK_REACHING_FARM = False  # a worker whose probe step reaches the farm refuses to start
ALLOW_LOCAL_BUILD_IO = False  # buildx may not write outputs or caches to, or read contexts from, the host's disk
ALLOW_BUILDX_ENTITLEMENTS = False  # buildx `allow` (network.host, security.insecure) is refused
ALLOW_BUILDX_BUILDER = False  # buildx `builder` (another builder of the host) is refused
ALLOW_SSH_AGENT = False  # buildx `ssh` (the worker's own agent) is refused
ACCEPT_CLEAR_CREDENTIALS = False  # a push message must carry sealed credentials, never clear ones
SEAL_TTL_S = 3600  # sealed credentials and build secrets expire this long after sealing
SHARED_CONTEXT_ROOT = None  # workers refuse shared-filesystem contexts unless a root is named
CONTEXT_TRANSPORT: Literal["redis", "path"] = "redis"  # contexts travel through the Redis store ("path": a shared filesystem)
DIGEST_CACHE_SUBDIR = "dockyard/context-digests"  # under the user's cache dir ($XDG_CACHE_HOME or ~/.cache): the per-file digest cache
WAIT_WAKE_S = 2.0  # a waiter blocked on a key's wake-ups looks anyway this often (to notice a dead owner)
PLACEMENT = True  # builds go to the live host that built their lineage (repository + Dockerfile) last, unless it is busy
TEAM = "default"  # a caller's team when none is named: the one team of a farm without a teams file
TEAMS_FILE = None  # no teams file: the farm has one team, default
FAIR_SHARE = True  # workers poll their teams' queues in a rotation weighted by share (False: a fixed order, first team first)
FAIR_RESERVE_FRACTION = 0.167  # with several teams, one team runs at most the pool's slots minus int(slots * this): 1 of 6 slots, none on 5 or fewer
AUDIT_MAX_ENTRIES = 100_000  # pushes the audit stream keeps
AUDIT_MAX_AGE_S = 90 * 24 * 3600  # the audit stream keeps pushes this long
BUILD_MEMORY_BYTES = None  # memory of one build step; None/0: host memory / worker_concurrency * build_memory_fraction
BUILD_MEMORY_FRACTION = 0.75  # the share of the host's memory all build slots together may use (the computed memory limit)
BUILD_CPUS = None  # CPUs of one build step (a CFS quota); None/0: the host's CPUs / worker_concurrency
BUILD_PIDS = None  # processes of one build (its steps); None/0: 1024 (dockyard.tasks.engine.limits.DEFAULT_PIDS)
BUILD_CGROUP_ROOT = "/sys/fs/cgroup"  # where the worker makes and watches build cgroups (cgroup v1); "": none (pids and buildx unlimited)
HISTORY_MAX_RECORDS = 10_000  # a team's history keeps at most this many builds and pushes (the newest)
HISTORY_MAX_AGE_S = 30 * 24 * 3600  # a history record is dropped this long after it finished
DASHBOARD_URL = "http://127.0.0.1:9810"  # where `dockyard dashboard` serves by default; links to a build's page start here
