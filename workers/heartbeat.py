"""A worker's presence in Redis: heartbeats, and forgetting images deleted from its engine.

Both run as daemon threads in the worker's main process, started when the
worker is ready and stopped (the host record removed) when it shuts down.
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
from tasks.store import redis_for

logger = logging.getLogger("dockyard.heartbeat")
_stop = threading.Event()


def host_info(settings: Settings) -> dict[str, Any]:
    return {
        "queue": settings.host_queue,
        "docker_host": settings.docker_host or os.environ.get("DOCKER_HOST", "default"),
        "pid": os.getpid(),
        "concurrency": settings.worker_concurrency,
    }


def beat_forever(settings: Settings, connection: redis.Redis, client: docker.DockerClient) -> None:
    """Heartbeat while the engine answers; stop advertising the host when it does not."""
    while not _stop.is_set():
        try:
            client.ping()
            hosts.beat(connection, settings, settings.host_id, host_info(settings))
        except docker.errors.DockerException as exc:
            logger.warning("engine not answering, host %s not advertised: %s", settings.host_id, exc)
            hosts.forget_host(connection, settings, settings.host_id)
        except redis.RedisError as exc:
            logger.warning("heartbeat failed: %s", exc)
        except Exception as exc:  # noqa: BLE001 - requests errors when the socket is gone
            logger.warning("engine check failed, host %s not advertised: %s", settings.host_id, exc)
            hosts.forget_host(connection, settings, settings.host_id)
        _stop.wait(settings.heartbeat_interval_s)


def watch_deletions(settings: Settings, connection: redis.Redis) -> None:
    """Drop cache entries and image locations as soon as the engine deletes their image."""
    while not _stop.is_set():
        client = open_client(settings)
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
def _start(**_: Any) -> None:
    settings = get_settings()
    connection = redis_for(settings)
    _stop.clear()
    threading.Thread(
        target=beat_forever, args=(settings, connection, open_client(settings)), name="heartbeat", daemon=True
    ).start()
    threading.Thread(target=watch_deletions, args=(settings, connection), name="image-watch", daemon=True).start()


@worker_shutdown.connect
def _stop_beating(**_: Any) -> None:
    _stop.set()
    settings = get_settings()
    hosts.forget_host(redis_for(settings), settings, settings.host_id)
