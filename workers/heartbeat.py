"""A worker's presence in Redis: heartbeats, and forgetting images deleted from its engine.

Both run as daemon threads in the worker's main process, started when the
worker is ready and stopped (the host record removed) when it shuts down.
When ready, the worker also sweeps the private directories dead processes
left (``workers.sweep``).
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import docker
import redis
from celery.signals import worker_ready, worker_shutdown

from config.settings import Settings, get_settings
from tasks import hosts
from tasks.engine import open_client
from tasks.keyspace import redis_for
from workers.metrics_server import serve_metrics
from workers.sweep import sweep

logger = logging.getLogger("dockyard.heartbeat")
_stop = threading.Event()


_metrics_url: list[str] = []


def host_info(settings: Settings) -> dict[str, Any]:
    return {
        "metrics": _metrics_url[0] if _metrics_url else None,
        "queue": settings.host_queue,
        "docker_host": settings.docker_host or os.environ.get("DOCKER_HOST", "default"),
        "pid": os.getpid(),
        "concurrency": settings.worker_concurrency,
    }


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


def beat_forever(settings: Settings, connection: redis.Redis, engine: Engine, app: Any, nodename: str) -> None:
    """Heartbeat while the engine answers. When it does not, stop advertising the host
    and stop taking shared builds (they go to other hosts); resume when it answers again."""
    consuming = True
    while not _stop.is_set():
        try:
            if engine.answers():
                hosts.beat(connection, settings, settings.host_id, host_info(settings))
                if not consuming:
                    logger.warning("engine of %s answers again: taking builds", settings.host_id)
                    app.control.add_consumer(settings.build_queue, destination=[nodename])
                    consuming = True
            else:
                hosts.forget_host(connection, settings, settings.host_id)
                if consuming:
                    logger.warning("engine of %s does not answer: not advertised, no shared builds", settings.host_id)
                    app.control.cancel_consumer(settings.build_queue, destination=[nodename])
                    consuming = False
        except redis.RedisError as exc:
            logger.warning("heartbeat failed: %s", exc)
        _stop.wait(settings.heartbeat_interval_s)


def watch_deletions(settings: Settings, connection: redis.Redis) -> None:
    """Drop cache entries and image locations as soon as the engine deletes their image."""
    while not _stop.is_set():
        try:
            client = open_client(settings)
        except Exception as exc:  # noqa: BLE001 - the engine is down: try again later
            logger.warning("image event stream unavailable: %s", exc)
            _stop.wait(settings.heartbeat_interval_s)
            continue
        try:
            for event in client.events(decode=True, filters={"type": "image", "event": ["delete"]}):
                image_id = str(event.get("id") or event.get("Actor", {}).get("ID", ""))
                if image_id:
                    dropped = hosts.forget_image(connection, settings, host_id=settings.host_id, image_id=image_id)
                    logger.info("image %s deleted on %s: %d keys dropped", image_id, settings.host_id, dropped)
                if _stop.is_set():
                    return
        except Exception as exc:  # noqa: BLE001 - reconnect on any stream failure
            logger.warning("image event stream broke, reconnecting: %s", exc)
            _stop.wait(1.0)
        finally:
            client.close()


@worker_ready.connect
def _start(sender: Any = None, **_: Any) -> None:
    sweep()
    settings = get_settings()
    connection = redis_for(settings)
    _stop.clear()
    try:
        server = serve_metrics(settings, connection)
        _metrics_url[:] = [f"http://{settings.metrics_bind}:{server.server_address[1]}/metrics"]
    except OSError as exc:
        logger.warning("no /metrics endpoint: %s", exc)
    threading.Thread(
        target=beat_forever, args=(settings, connection, Engine(settings), sender.app, sender.hostname),
        name="heartbeat", daemon=True,
    ).start()
    threading.Thread(target=watch_deletions, args=(settings, connection), name="image-watch", daemon=True).start()


@worker_shutdown.connect
def _stop_beating(**_: Any) -> None:
    _stop.set()
    settings = get_settings()
    hosts.forget_host(redis_for(settings), settings, settings.host_id)
