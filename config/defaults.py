"""Named defaults for every setting, one place, one comment each."""

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
CONTEXT_CHUNK_BYTES = 4 * 1024**2  # contexts are stored in Redis in chunks of this size
CONTEXT_STORE_URL = "redis://127.0.0.1:6380/0"  # the context store: a Redis of its own, never the broker's
CONTEXT_STORE_MAX_BYTES = 2 * 1024**3  # the context store's budget (its maxmemory, volatile-ttl); provisioning sets it
CONTEXT_UPLOAD_CHUNKS_IN_FLIGHT = 2  # an upload sends this many chunks per round trip (bounds the caller's memory)
CONTEXT_RESENDS = 2  # a build whose context left the store is uploaded and sent again this many times
CACHE_TTL_S = 7 * 24 * 3600  # a cache entry and image location expire this long after writing
LEASE_S = 20.0  # a build lease expires this long after its last renewal
HEARTBEAT_INTERVAL_S = 2.0  # how often a worker refreshes its host record
HEARTBEAT_TTL_S = 10.0  # a host whose record is older than this is dead
DISK_BUDGET_BYTES = 20 * 1024**3  # dockyard-built images one host keeps (layers counted once); 0: no budget
DISK_CHECK_INTERVAL_S = 60.0  # a worker checks its host's disk budget this often (and after each build)
METRICS_PORT = 9808  # port of a worker's /metrics; 0 picks a free one
METRICS_BIND = "127.0.0.1"  # address /metrics listens on
ALLOW_HOST_NETWORK = False  # builds may not use the host's network (network_mode/network="host")
ALLOW_LOCAL_BUILD_IO = False  # buildx may not write outputs or caches to, or read contexts from, the host's disk
ALLOW_BUILDX_ENTITLEMENTS = False  # buildx `allow` (network.host, security.insecure) is refused
ALLOW_BUILDX_BUILDER = False  # buildx `builder` (another builder of the host) is refused
ALLOW_SSH_AGENT = False  # buildx `ssh` (the worker's own agent) is refused
ACCEPT_CLEAR_CREDENTIALS = False  # a push message must carry sealed credentials, never clear ones
SEAL_TTL_S = 3600  # sealed credentials and build secrets expire this long after sealing
SHARED_CONTEXT_ROOT = None  # workers refuse shared-filesystem contexts unless a root is named
CONTEXT_TRANSPORT: Literal["redis", "path"] = "redis"  # contexts travel through the Redis store ("path": a shared filesystem)
FAILURE_NOTICE_S = 30  # how long joiners can read a build owner's failure
STORE_OUTAGE_WAIT_S = 120  # how long a task waits for Redis to come back before failing
STORE_OUTAGE_ATTEMPTS = 3  # runs of a task body across Redis outages
RETRY_BACKOFF_MAX_S = 300  # longest delay between retries of a transient error
STREAM_MAX_LINES = 5000  # older lines of one build's live output are trimmed
STREAM_TTL_S = 3600  # a build's output stream expires this long after its last line
PROGRESS_EVERY_S = 1.0  # a running task's PROGRESS state is updated at most this often
METRICS_TTL_S = 30 * 24 * 3600  # a host's counters expire a month after their last change
PACK_COPY_BUFFER_BYTES = 1024 * 1024  # read size when packing context files
PACK_IN_MEMORY_BYTES = 16 * 1024**2  # a packed context up to this size never touches the disk
DIGEST_CACHE_SUBDIR = "dockyard/context-digests"  # under the user's cache dir ($XDG_CACHE_HOME or ~/.cache): the per-file digest cache
DIGEST_CACHE_RACY_S = 2.0  # a file changed this close to (or after) the last digest walk is read again: coarse filesystem timestamps
REGISTRY_TIMEOUT_S = 5.0  # a registry HEAD that takes longer counts as no answer (a cache miss)
WAIT_WAKE_S = 2.0  # a waiter blocked on a key's wake-ups looks anyway this often (to notice a dead owner)
NOTICE_TTL_S = 600  # a key's wake-up stream expires this long after its last event
ANSWER_SETTLE_S = 2.0  # after an owner lets go, how long a joiner waits for the holder to record the tags and answer
RESULT_CATCH_UP_S = 0.5  # after a key's wake-up, how long a caller waits for its task's result to land
REDIS_MAX_CONNECTIONS = 2000  # per process: every thread waiting on a key blocks on a connection of its own
PLACEMENT = True  # builds go to the live host that built their lineage (repository + Dockerfile) last, unless it is busy
PLACEMENT_SEND_WINDOW_S = 1.0  # a build routed to a host queue counts as that host's load this long (until the broker shows it)
LINEAGES_PER_HOST = 1000  # the lineages one host is remembered to hold (the most recent)
NO_KEY_POLL_S = 0.5  # a caller with no cache key to wake on (ignore_cache) reads its task's state this often
