"""The worker's ``/metrics`` endpoint: prometheus_client's exposition of ``FarmCollector``.

The collector sits in a registry of its own (not prometheus_client's global
one: no process or platform metrics of whichever process imports this), read
from Redis at each scrape. Any path but ``/metrics`` is a 404; a scrape while
Redis does not answer is a 503 (logged), and the server goes on.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import redis
from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from dockyard.config.settings import Settings
from dockyard.workers.metrics_collector import FarmCollector

logger = logging.getLogger("dockyard.metrics")
StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def farm_registry(settings: Settings, connection: redis.Redis, broker: redis.Redis | None) -> CollectorRegistry:
    """A registry holding only this worker's ``FarmCollector``."""
    registry = CollectorRegistry()
    registry.register(FarmCollector(settings, connection, broker))
    return registry


def metrics_app(registry: CollectorRegistry) -> WsgiApp:
    """prometheus_client's WSGI app on ``/metrics`` alone, with a 503 when Redis fails."""
    exposition: WsgiApp = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/metrics":
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"Not found: the metrics are on /metrics\n"]
        try:
            return exposition(environ, start_response)
        except redis.RedisError as exc:
            logger.warning("/metrics: Redis does not answer: %s", exc)
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
            return [f"Redis: {exc}\n".encode()]

    return app


class QuietHandler(WSGIRequestHandler):
    """No log line per request."""

    def log_message(self, *_: Any) -> None:
        pass


def serve_metrics(settings: Settings, connection: redis.Redis, broker: redis.Redis | None = None) -> WSGIServer:
    """Serve ``/metrics`` on ``metrics_bind:metrics_port`` (0: any free port) in a daemon thread.

    ``broker``: the broker's Redis, for queue depths and spills (None: without them).
    """
    app = metrics_app(farm_registry(settings, connection, broker))
    server = make_server(settings.metrics_bind, settings.metrics_port, app, ThreadingWSGIServer, QuietHandler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    logger.info("metrics on http://%s:%d/metrics", *server.server_address[:2])
    return server
