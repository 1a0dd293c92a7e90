"""Lineage-aware placement: a build goes to the live host whose engine built its lineage last.

A lineage is the repository, the Dockerfile path, the backend and the
platforms of a build: successive builds of one project share it whatever
their content, and their slow early layers sit in the engine that built the
last one. The classic builder and BuildKit keep separate layer caches, and
another platform builds other layers, so backend and platforms are part of it.

Keys (dockyard's keyspace, written by workers when a build of the lineage was
*built* on their engine, never on a hit):
- ``lineage:<id>``: hash host -> when that host last built the lineage;
- ``lineages:<host>``: sorted set of the lineage names the host built, by time.

Routing (``placement_queue``, from ``dockyard.tasks.routing.router``) reads them with the
pool's live hosts (``hosts-index`` and the host records, same build queue)
and each host's load: its in-flight deliveries (``inflight:<host>``), its
host queue's length in the broker, and the builds routed to it in the last
``PLACEMENT_SEND_WINDOW_S`` and not yet published (``<host queue>:placed``
in the broker, which callers may write; removed once the message is in the
queue), so that concurrent senders do not all pick one host.
A host whose load is at or above its concurrency is saturated. A drained host
(its record's ``drained``, ``dockyard.tasks.farm.drain``) is skipped as if it were
dead: its lineages go to the other live hosts.
Each spill adds one to ``<shared queue>:spills`` in the broker (hash:
preferred host -> spills), which callers may write as they may the queue,
not under ``metrics:``, which only workers may (``dockyard.workers.metrics_collector``
reads it).

- The lineage's preferred host (the live one that built it last) takes it
  unless saturated; then it spills to the shared queue.
- A new lineage (no live host built it) goes to the least-loaded live host
  with a free slot; with none free, to the shared queue.
Anything unreadable (Redis away, an odd message) sends to the shared queue.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import random
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import redis
from celery.signals import after_task_publish

from dockyard.config.settings import Settings, host_queue, team_queue
from dockyard.tasks.errors import InvalidInput
from dockyard.tasks.farm.hosts import host_key, hosts_index_key
from dockyard.tasks.keyspace import connect_for, key, text
from dockyard.tasks.routing.lookup import routing_redis, routing_settings
from dockyard.tasks.request.naming import qualify_image_name
from dockyard.tasks.farm.recovery import inflight_key
from dockyard.tasks.request.spec import BuildOptions, platforms_of
from dockyard.tasks.farm.metrics import METRICS_TTL_S

PLACEMENT_SEND_WINDOW_S = 1.0  # a build routed to a host queue counts as that host's load this long (until the broker shows it)
LINEAGES_PER_HOST = 1000  # the lineages one host is remembered to hold (the most recent)

logger = logging.getLogger("dockyard.placement")
REDIS_SCHEMES = ("redis://", "rediss://", "unix://", "sentinel://")


@dataclass(frozen=True)
class Lineage:
    """The builds that share warm layers: one project's repository, Dockerfile, backend and platforms."""

    repository: str
    dockerfile: str
    backend: str = "docker-py"
    platforms: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """Readable: ``repo (Dockerfile)``, with the backend and platforms when not the defaults."""
        extra = [] if self.backend == "docker-py" else [self.backend]
        extra += list(self.platforms)
        return f"{self.repository} ({', '.join([self.dockerfile, *extra])})"

    @property
    def id(self) -> str:
        return hashlib.sha256(json.dumps(
            [self.repository, self.dockerfile, self.backend, list(self.platforms)]
        ).encode()).hexdigest()[:32]


def lineage_of(image_name: str, dockerfile: str, backend: str, build_kwargs: Mapping[str, Any]) -> Lineage:
    """The lineage of a build of qualified ``image_name`` (tags never part of it)."""
    platforms = platforms_of(dict(build_kwargs)) or []
    return Lineage(image_name, dockerfile, backend, tuple(sorted(platforms)))


def lineage_of_options(options: BuildOptions) -> Lineage:
    return lineage_of(options.image_name, options.dockerfile, options.build_backend, options.build_kwargs)


def lineage_of_message(args: Sequence[Any], kwargs: Mapping[str, Any], settings: Settings) -> Lineage | None:
    """The lineage of a build task message (a prepared ``spec``, or prefect-docker's arguments); None if odd."""
    fields = kwargs.get("spec") if "spec" in kwargs else kwargs
    if args or not isinstance(fields, Mapping):
        return None
    image_name, dockerfile = fields.get("image_name"), fields.get("dockerfile", "Dockerfile")
    backend = fields.get("build_backend", "docker-py")
    build_kwargs = fields.get("build_kwargs", {}) if "spec" in kwargs else fields
    if not (isinstance(image_name, str) and isinstance(dockerfile, str) and isinstance(backend, str)
            and isinstance(build_kwargs, Mapping)):
        return None
    try:
        if "spec" not in kwargs:  # sent by name: the worker qualifies the name the same way
            image_name = qualify_image_name(image_name, settings.default_namespace)
        return lineage_of(image_name, dockerfile, backend, build_kwargs)
    except (InvalidInput, ValueError, TypeError):
        return None  # the task itself reports the bad argument


def lineage_key(settings: Settings, lineage: Lineage) -> str:
    return key(settings, "lineage", lineage.id)


def held_key(settings: Settings, host_id: str) -> str:
    return key(settings, "lineages", host_id)


def record_built(
    connection: redis.Redis, settings: Settings, lineage: Lineage, host_id: str, *, at: float | None = None
) -> None:
    """``host_id``'s engine built a build of ``lineage`` (its layers are warm there)."""
    now = time.time() if at is None else at
    held = held_key(settings, host_id)
    pipe = connection.pipeline(transaction=False)
    pipe.hset(lineage_key(settings, lineage), host_id, repr(now))
    pipe.expire(lineage_key(settings, lineage), settings.cache_ttl_s)
    pipe.zadd(held, {lineage.name: now})
    pipe.zremrangebyscore(held, "-inf", now - settings.cache_ttl_s)
    pipe.zremrangebyrank(held, 0, -LINEAGES_PER_HOST - 1)
    pipe.expire(held, settings.cache_ttl_s)
    pipe.execute()


def _builders(raw: Mapping[Any, Any]) -> dict[str, float]:
    return {text(host): float(text(at)) for host, at in raw.items()}


def held_lineages(connection: redis.Redis, settings: Settings, host_id: str) -> list[str]:
    """The lineages ``host_id`` built, most recent first."""
    names: list[bytes | str] = connection.zrevrange(held_key(settings, host_id), 0, -1)  # type: ignore[assignment]
    return [text(name) for name in names]


@dataclass(frozen=True)
class HostLoad:
    """One live host of the pool and its work: in flight, queued in its host queue, routed there just now."""

    host: str
    concurrency: int
    running: int = 0
    queued: int = 0
    sent: int = 0

    @property
    def load(self) -> int:
        return self.running + self.queued + self.sent

    @property
    def saturated(self) -> bool:
        return self.load >= self.concurrency


Reason = Literal["preferred", "spill", "least-loaded", "busy", "no-host"]


@dataclass(frozen=True)
class Decision:
    """Where a build goes: ``host``'s queue, or the shared queue (None), and why."""

    host: str | None
    reason: Reason
    preferred: str | None = None  # the lineage's live preferred host, when it has one


def choose(
    built_by: Mapping[str, float], loads: Mapping[str, HostLoad], *, rng: random.Random | None = None
) -> Decision:
    """The preferred host (the live one that built the lineage last) unless saturated (then spill);
    for a new lineage the least-loaded host with a free slot (ties at random), else the shared queue."""
    live_builders = [host for host in built_by if host in loads]
    if live_builders:
        preferred = max(live_builders, key=lambda host: (built_by[host], host))
        if loads[preferred].saturated:
            return Decision(None, "spill", preferred)
        return Decision(preferred, "preferred", preferred)
    free = [each for each in loads.values() if not each.saturated]
    if not free:
        return Decision(None, "busy" if loads else "no-host")
    lowest = min(each.load / each.concurrency for each in free)
    ties = sorted(each.host for each in free if each.load / each.concurrency == lowest)
    return Decision((rng or random).choice(ties), "least-loaded")


def broker_redis(settings: Settings) -> redis.Redis | None:
    """A client of the broker's Redis (the cache's own when they are one), or None if it is not Redis."""
    url = settings.effective_broker_url
    if url == settings.effective_cache_url:
        return routing_redis(settings)
    if not url.startswith(REDIS_SCHEMES):
        return None
    if url not in _brokers:
        _brokers[url] = connect_for(settings, url)
    return _brokers[url]


_brokers: dict[str, redis.Redis] = {}  # one client per broker URL and process


def placed_key(host_id: str) -> str:
    """The builds routed to ``host_id``'s queue just now (in the broker, beside the queue)."""
    return host_queue(host_id) + ":placed"


def pool_loads(
    connection: redis.Redis, broker: redis.Redis | None, settings: Settings, hosts: Sequence[str], *, now: float
) -> dict[str, HostLoad]:
    """The live hosts among ``hosts`` whose shared queue is this pool's, with their load (drained ones left out)."""
    if not hosts:
        return {}
    pipe = connection.pipeline(transaction=False)
    pipe.mget([host_key(settings, host) for host in hosts])
    for host in hosts:
        pipe.hlen(inflight_key(settings, host))
    records, *running = pipe.execute()
    queued, sent = [0] * len(hosts), [0] * len(hosts)
    parsed = [json.loads(raw) if raw else None for raw in records]
    if broker is not None:
        pipe = broker.pipeline(transaction=False)
        for host, record in zip(hosts, parsed):
            pipe.zcount(placed_key(host), now - PLACEMENT_SEND_WINDOW_S, "+inf")
            for team in _teams_of(record, settings):
                pipe.llen(team_queue(host_queue(host), team))
        counts = iter(pipe.execute())
        for index, record in enumerate(parsed):
            sent[index] = int(next(counts))
            queued[index] = sum(int(next(counts)) for _team in _teams_of(record, settings))
    loads = {}
    for index, (host, record) in enumerate(zip(hosts, parsed)):
        if record is None or record.get("build_queue", settings.build_queue) != settings.build_queue:
            continue  # dead, or a host of another pool
        if record.get("drained"):
            continue  # drained: it takes no new build (dockyard.tasks.farm.drain)
        concurrency = max(1, int(record.get("concurrency") or 1))
        loads[host] = HostLoad(host, concurrency, int(running[index]), int(queued[index]), int(sent[index]))
    return loads


def _teams_of(record: dict[str, Any] | None, settings: Settings) -> list[str]:
    """The teams whose host queues a host consumes (its record says; an older worker's: the caller's own)."""
    teams = (record or {}).get("teams")
    return [str(each) for each in teams] if isinstance(teams, list) and teams else [settings.team]


def spills_key(build_queue: str) -> str:
    """The spills of the pool of ``build_queue`` (in the broker, beside its shared queue)."""
    return build_queue + ":spills"


def count_spill(broker: redis.Redis, settings: Settings, preferred: str) -> None:
    """One build of a lineage whose preferred host was saturated went to the shared queue."""
    pipe = broker.pipeline(transaction=False)
    pipe.hincrby(spills_key(settings.build_queue), preferred, 1)
    pipe.expire(spills_key(settings.build_queue), METRICS_TTL_S)
    pipe.execute()


_routing = threading.local()  # this thread's reservation, until its message is published


def _published(**_: Any) -> None:
    """The message routed by this thread is in its host queue now (its length counts it): the
    reservation goes, so a build is never counted twice."""
    pending = getattr(_routing, "pending", None)
    if pending is not None:
        _routing.pending = None
        broker, host, member = pending
        with contextlib.suppress(redis.RedisError):
            broker.zrem(placed_key(host), member)


after_task_publish.connect(_published, weak=False)


def reserve(broker: redis.Redis | None, load: HostLoad, *, now: float) -> bool:
    """Count one build routed to ``load.host`` now, until it is published; False (and uncounted) if
    others routed there since ``load`` was read fill its free slots."""
    if broker is None:
        return True
    member = uuid.uuid4().hex
    window = PLACEMENT_SEND_WINDOW_S
    pipe = broker.pipeline(transaction=True)
    pipe.zremrangebyscore(placed_key(load.host), "-inf", now - window)
    pipe.zadd(placed_key(load.host), {member: now})
    pipe.zcard(placed_key(load.host))
    pipe.pexpire(placed_key(load.host), int(window * 2000))
    sent_now = int(pipe.execute()[2])
    if load.running + load.queued + sent_now - 1 < load.concurrency:
        _routing.pending = (broker, load.host, member)
        return True
    broker.zrem(placed_key(load.host), member)
    return False


def place(
    connection: redis.Redis, broker: redis.Redis | None, settings: Settings, lineage: Lineage, *, skip: Sequence[str] = ()
) -> Decision:
    """Where a build of ``lineage`` goes now (see the module's docstring); never to a host in ``skip``."""
    now = time.time()
    pipe = connection.pipeline(transaction=False)
    pipe.zrangebyscore(hosts_index_key(settings), now - settings.heartbeat_ttl_s, "+inf")
    pipe.hgetall(lineage_key(settings, lineage))
    indexed, raw_builders = pipe.execute()
    candidates = sorted(name for host in indexed if (name := text(host)) not in skip)
    loads = pool_loads(connection, broker, settings, candidates, now=now)
    decision = choose(_builders(raw_builders), loads)
    if decision.host is not None and not reserve(broker, loads[decision.host], now=now):
        return Decision(None, "spill" if decision.reason == "preferred" else "busy", decision.preferred)
    return decision


def placement_queue(args: Sequence[Any], kwargs: Mapping[str, Any]) -> str | None:
    """The queue of the host a build task message should go to, or None for the shared queue."""
    settings = routing_settings()
    if not settings.placement:
        return None
    lineage = lineage_of_message(args, kwargs, settings)
    if lineage is None:
        return None
    try:
        broker = broker_redis(settings)
        decision = place(routing_redis(settings), broker, settings, lineage)
    except (redis.RedisError, ValueError) as exc:
        logger.warning("placement of %s failed, sending to the shared queue: %s", lineage.name, exc)
        return None
    logger.debug("placement of %s: %s", lineage.name, decision)
    if decision.reason == "spill" and decision.preferred is not None and broker is not None:
        try:
            count_spill(broker, settings, decision.preferred)
        except redis.RedisError as exc:  # a metric: never a reason not to send the build
            logger.warning("spill of %s not counted: %s", lineage.name, exc)
    return host_queue(decision.host) if decision.host is not None else None


def elsewhere_queue(args: Sequence[Any], kwargs: Mapping[str, Any], settings: Settings, host_id: str) -> str:
    """The farm queue a build message popped by drained ``host_id`` goes to: the host queue of
    another live host, as placement chooses, or else the shared queue (which ``host_id`` no longer consumes)."""
    lineage = lineage_of_message(args, kwargs, settings)
    if lineage is None:
        return settings.build_queue
    try:
        decision = place(routing_redis(settings), broker_redis(settings), settings, lineage, skip=(host_id,))
    except (redis.RedisError, ValueError) as exc:
        logger.warning("placement of %s away from drained %s failed, sending to the shared queue: %s", lineage.name, host_id, exc)
        return settings.build_queue
    return host_queue(decision.host) if decision.host is not None else settings.build_queue
