"""A worker's presence in Redis: heartbeats, and forgetting images deleted from its engine.

Both run as daemon threads in the worker's main process, started when the
worker is ready and stopped (the host record removed) when it shuts down.
When ready, the worker also sweeps the private directories dead processes
left (``dockyard.workers.sweep``), withdraws a host record a previous run left, and
reconciles its host's records with its engine (``dockyard.tasks.farm.reconcile``) before
the heartbeat starts. Before all that (after ``/metrics`` is up) it probes its build network
(``dockyard.tasks.engine.network_probe``): the result goes into the host record, and a build
step that reaches the farm stops the worker unless ``accept_build_network_reaching_farm``. ``worker_ready`` runs in the consumer's event loop
after the queues are declared and before the loop first fetches a message,
so no task starts before the reconciliation ends. The heartbeat advertises
the host only once it is reconciled, and reconciles again whenever the
engine answers after it did not. While the host is drained (``dockyard.tasks.farm.drain``)
the heartbeat goes on, with the drain, the running and held messages in the record, and the
worker consumes none of the shared build queues (``SharedQueues``).

A host's fast-lane worker (``dockyard.workers.fast_worker``, ``dockyard.tasks.farm.lane``) runs none
of this: it only puts back its own previous run's in-flight messages when
ready. The build worker advertises the fast lane's queue in the host record
while its fast worker runs, and recovers dead hosts' fast lanes with theirs.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

import docker
import redis
import requests
from celery.exceptions import WorkerShutdown
from celery.signals import worker_ready, worker_shutdown
from celery.worker import state as worker_state

from dockyard.config.settings import Settings, get_settings, team_queues
from dockyard.tasks.farm import drain, hosts
from dockyard.tasks.routing import placement
from dockyard.tasks.farm import recovery
from dockyard.tasks.engine.connection import open_client
from dockyard.tasks.engine.network_probe import ProbeResult, farm_addresses, run_probe
from dockyard.tasks.keyspace import redis_for
from dockyard.tasks.celery_tasks import send_parked
from dockyard.tasks.teams import caps
from dockyard.tasks.farm.lane import in_fast_lane
from dockyard.tasks.farm.reconcile import reconcile
from dockyard.workers import disk_guard, fast_worker
from dockyard.workers.inflight import recover_forever, recover_own_previous_run
from dockyard.workers.metrics_server import serve_metrics
from dockyard.workers.sweep import sweep

logger = logging.getLogger("dockyard.heartbeat")
_stop = threading.Event()


_metrics_url: list[str] = []
_build_network: list[dict[str, Any]] = []  # the start-up probe's record (dockyard.tasks.engine.network_probe)
_refused: list[str] = []  # why the probe stopped this worker at start


def host_info(settings: Settings) -> dict[str, Any]:
    return {
        "metrics": _metrics_url[0] if _metrics_url else None,
        "queue": settings.host_queue,
        "build_queue": settings.build_queue,  # its pool: placement sends a pool's builds to its own hosts only
        "docker_host": settings.docker_host or os.environ.get("DOCKER_HOST", "default"),
        "pid": os.getpid(),
        "concurrency": settings.worker_concurrency,
        "fast_queue": settings.fast_queue if fast_worker.serving() else None,
        "teams": settings.declared_teams.names,  # its queues are <queue>@<team> of each (placement counts them all)
        "build_network": _build_network[0] if _build_network else None,  # the probe's result: dockyard doctor prints it
    }


class BuildNetworkReachesFarm(WorkerShutdown):  # type: ignore[misc]  # celery is untyped
    """The start-up probe's build step reached the farm's addresses and no setting accepts it: the worker stops."""


def probe_build_network(settings: Settings, metrics: tuple[str, int] | None) -> None:
    """Run the start-up probe of the build network (``dockyard.tasks.engine.network_probe``), keep its record
    for the host record, log it; ``BuildNetworkReachesFarm`` if it reached the farm and that is not accepted."""
    _build_network.clear()
    if not settings.build_network_probe:
        return
    try:
        client = open_client(settings)
    except (docker.errors.DockerException, requests.RequestException) as exc:  # the engine is down: the heartbeat says so
        result = ProbeResult(None, farm_addresses(settings, metrics), error=f"the engine does not answer: {exc}")
    else:
        try:
            result = run_probe(client, settings, farm_addresses(settings, metrics))
        finally:
            client.close()
    _build_network.append({**result.record(), "accepted": settings.accept_build_network_reaching_farm})
    if result.error is not None:
        logger.warning("build network probe of %s did not run: %s", settings.host_id, result.error)
    elif not result.reached:
        logger.info("build network %s of %s reaches none of the farm's addresses (%s)",
                    result.network, settings.host_id, ", ".join(result.probed))
    else:
        accepted = settings.accept_build_network_reaching_farm
        logger.error(
            "BUILD STEPS CAN REACH THE FARM: a build step on network %s of %s connected to %s; %s",
            result.network, settings.host_id, ", ".join(result.reached),
            "starting anyway (DOCKYARD_ACCEPT_BUILD_NETWORK_REACHING_FARM=true)" if accepted else
            "refusing to start: firewall these addresses from build steps, choose another network "
            "(DOCKYARD_BUILD_NETWORKS), or set DOCKYARD_ACCEPT_BUILD_NETWORK_REACHING_FARM=true",
        )
        if not accepted:
            _refused[:] = [
                f"the build network {result.network} of {settings.host_id} reaches the farm ({', '.join(result.reached)}): "
                "not started (see its log; DOCKYARD_ACCEPT_BUILD_NETWORK_REACHING_FARM=true starts it anyway)"
            ]
            raise BuildNetworkReachesFarm(1)


def start_refused() -> str | None:
    """Why this worker stopped at start (its build network reaches the farm), or None."""
    return _refused[0] if _refused else None


class Engine:
    """This host's engine, reconnected as needed."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.client: docker.DockerClient | None = None

    def answers(self) -> bool:
        try:
            if self.client is None:
                self.client = open_client(self.settings)
            return bool(self.client.ping())
        except Exception:  # noqa: BLE001 - docker and requests errors alike mean "no"
            self.client = None
            return False


def reconciled(settings: Settings, connection: redis.Redis, engine: Engine) -> bool:
    """Reconcile this host's records with its engine; False (logged) if the engine or Redis failed."""
    if not engine.answers() or engine.client is None:
        logger.warning("engine of %s does not answer: not reconciled, not advertised", settings.host_id)
        return False
    try:
        found = reconcile(connection, settings, engine.client, settings.host_id)
    except (docker.errors.DockerException, requests.RequestException, redis.RedisError) as exc:
        logger.warning("reconciliation of %s failed, not advertised: %s", settings.host_id, exc)
        return False
    logger.info(
        "reconciled %s: %d of %d recorded images gone from its engine, %d keys dropped",
        settings.host_id, len(found.gone), found.checked, found.dropped,
    )
    return True


class SharedQueues:
    """This worker's consumers of the shared build queues (``<build_queue>@<team>`` of each team),
    turned on and off from the heartbeat thread.

    The change is sent as a remote-control command to this worker's own node name only
    (``add_consumer``/``cancel_consumer``): the command arrives on the consumer's own event loop,
    which alone may touch its broker channel (kombu's channels are not thread-safe, and a callback
    queued on the loop from this thread would wait until some other event woke it). Delivery of a
    broadcast is not confirmed, so each beat reads what the consumer really consumes
    (``consuming_from``, a read of its own tags) and sends the command again while it differs.
    """

    def __init__(self, settings: Settings, app: Any, nodename: str, consumer: Any = None) -> None:
        self.queues = team_queues(settings, settings.build_queue)
        self.app, self.nodename, self.consumer = app, nodename, consumer
        self.asked = dict.fromkeys(self.queues, True)  # what was last asked (the worker starts with -Q naming them)

    def actual(self) -> dict[str, bool] | None:
        """Which shared queues the consumer consumes now; None if it cannot be read (no consumer, or
        one restarting after a broker failure)."""
        task_consumer = getattr(self.consumer, "task_consumer", None)
        if task_consumer is None:
            return None
        return {queue: bool(task_consumer.consuming_from(queue)) for queue in self.queues}

    def consuming(self) -> bool:
        """Whether any shared queue is consumed (as read from the consumer, else as last asked)."""
        found = self.actual()
        return any((found if found is not None else self.asked).values())

    def want(self, consume: bool, why: str) -> None:
        """Consume the shared queues or not; a command for each queue that differs."""
        found = self.actual()
        if found is None and self.consumer is not None:
            return  # the consumer is restarting: it consumes what was last selected; read it next beat
        differ = [queue for queue in self.queues if (found if found is not None else self.asked)[queue] != consume]
        if differ and all(self.asked[queue] != consume for queue in differ):
            logger.warning("%s: %s shared builds", why, "taking" if consume else "no")
        for queue in differ:
            if consume:
                self.app.control.add_consumer(queue, destination=[self.nodename])
            else:
                self.app.control.cancel_consumer(queue, destination=[self.nodename])
            self.asked[queue] = consume


def held_requests() -> tuple[int, int]:
    """This worker's tasks running now, and the messages it holds (received, running or waiting
    for a slot or a countdown), from Celery's state in the worker's main process."""
    held = len(worker_state.reserved_requests) + len(worker_state.scheduled_requests)
    return len(worker_state.active_requests), held


def beat_once(settings: Settings, connection: redis.Redis, shared: SharedQueues, current: dict[str, Any] | None) -> None:
    """Write the host record with its drain state; again at once if the drain changed meanwhile
    (``dockyard drain`` writes the record too: the last write always has the latest drain)."""
    for _attempt in range(2):
        running, held = held_requests()
        fields = drain.record_fields(current, consuming_shared=shared.consuming(), running=running, held=held)
        hosts.beat(connection, settings, settings.host_id, {**host_info(settings), **fields})
        latest = drain.drained(connection, settings, settings.host_id)
        if (latest or {}).get("id") == (current or {}).get("id") and (latest is None) == (current is None):
            return
        current = latest


def beat_forever(
    settings: Settings, connection: redis.Redis, engine: Engine, app: Any, nodename: str, *,
    reconciled_at_start: bool, consumer: Any = None,
) -> None:
    """Heartbeat while the engine answers and the host is reconciled. When the engine does not
    answer, stop advertising the host and stop taking shared builds (they go to other hosts);
    when it answers again, reconcile, then resume. While the host is drained
    (``dockyard.tasks.farm.drain``) it heartbeats but takes no shared builds."""
    is_reconciled = reconciled_at_start
    shared = SharedQueues(settings, app, nodename, consumer)
    while not _stop.is_set():
        try:
            current = drain.drained(connection, settings, settings.host_id)
            if engine.answers():
                is_reconciled = is_reconciled or reconciled(settings, connection, engine)
                if current is not None:
                    shared.want(False, f"{settings.host_id} is drained")
                else:
                    shared.want(True, f"{settings.host_id} is in service and its engine answers")
                if is_reconciled:
                    beat_once(settings, connection, shared, current)
                    recovery.known(connection, settings)  # messages routed to its queues are recovered if it dies
            else:
                is_reconciled = False
                hosts.forget_host(connection, settings, settings.host_id)
                shared.want(False, f"engine of {settings.host_id} does not answer: not advertised")
        except redis.RedisError as exc:
            logger.warning("heartbeat failed: %s", exc)
        _stop.wait(settings.heartbeat_interval_s)


def watch_deletions(settings: Settings, connection: redis.Redis, since: float) -> None:
    """Drop cache entries and image locations as soon as the engine deletes their image.

    The first stream starts at ``since`` (taken before the start's reconciliation, so a
    deletion while it ran is not missed); a stream that broke resumes where it broke.
    """
    while not _stop.is_set():
        try:
            client = open_client(settings)
        except Exception as exc:  # noqa: BLE001 - the engine is down: try again later
            logger.warning("image event stream unavailable: %s", exc)
            _stop.wait(settings.heartbeat_interval_s)
            continue
        try:
            events = client.events(since=f"{since:.6f}", decode=True, filters={"type": "image", "event": ["delete"]})
            for event in events:
                image_id = str(event.get("id") or event.get("Actor", {}).get("ID", ""))
                if image_id:
                    dropped = hosts.forget_image(connection, settings, host_id=settings.host_id, image_id=image_id)
                    logger.info("image %s deleted on %s: %d keys dropped", image_id, settings.host_id, dropped)
                if _stop.is_set():
                    return
        except Exception as exc:  # noqa: BLE001 - reconnect on any stream failure
            logger.warning("image event stream broke, reconnecting: %s", exc)
            since = time.time()
            _stop.wait(1.0)
        finally:
            client.close()


@worker_ready.connect
def _start(sender: Any = None, **_: Any) -> None:
    if in_fast_lane():
        recover_own_previous_run(get_settings(), sender.app)
        return
    sweep()
    settings = get_settings()
    connection = redis_for(settings)
    _stop.clear()
    try:
        server = serve_metrics(settings, connection, placement.broker_redis(settings))
        _metrics_url[:] = [f"http://{settings.metrics_bind}:{server.server_address[1]}/metrics"]
        metrics_address: tuple[str, int] | None = (settings.metrics_bind, int(server.server_address[1]))
    except OSError as exc:
        logger.warning("no /metrics endpoint: %s", exc)
        metrics_address = None
    probe_build_network(settings, metrics_address)  # before anything is consumed: it may refuse to start
    since, engine = time.time(), Engine(settings)
    withdraw_stale_record(settings, connection)
    recover_own_previous_run(settings, sender.app)
    at_start = reconciled(settings, connection, engine)
    fast_worker.start(settings)  # after the reconciliation: the fast lane answers from records checked against the engine
    threading.Thread(
        target=beat_forever, args=(settings, connection, engine, sender.app, sender.hostname),
        kwargs={"reconciled_at_start": at_start, "consumer": sender}, name="heartbeat", daemon=True,
    ).start()
    threading.Thread(
        target=watch_deletions, args=(settings, connection, since), name="image-watch", daemon=True
    ).start()
    threading.Thread(target=recover_forever, args=(settings, sender.app, _stop), name="recovery", daemon=True).start()
    if caps.may_park(settings):
        threading.Thread(target=release_parked_forever, args=(settings, connection, sender.app), name="caps", daemon=True).start()
    disk_guard.start(settings, _stop)


def release_parked_forever(settings: Settings, connection: redis.Redis, app: Any) -> None:
    """Each beat, release the parked builds of capped teams into their free slots
    (``dockyard.tasks.teams.caps``): those a dead worker's build held, once its lease expired."""
    publish = send_parked(app, connection, settings)
    while not _stop.wait(settings.heartbeat_interval_s):
        try:
            caps.release_all(connection, settings, publish, slots=lambda: hosts.pool_slots(connection, settings))
        except redis.RedisError as exc:
            logger.warning("parked builds not released: %s", exc)


def withdraw_stale_record(settings: Settings, connection: redis.Redis) -> None:
    """Remove a host record a killed previous run left: the host is not advertised until reconciled."""
    try:
        hosts.forget_host(connection, settings, settings.host_id)
    except redis.RedisError as exc:
        logger.warning("could not withdraw the host record of %s: %s", settings.host_id, exc)


@worker_shutdown.connect
def _stop_beating(**_: Any) -> None:
    if in_fast_lane():
        return  # the host's build worker owns its record
    _stop.set()
    fast_worker.stop()
    settings = get_settings()
    hosts.forget_host(redis_for(settings), settings, settings.host_id)
