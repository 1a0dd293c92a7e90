"""The worker's ``/metrics`` endpoint: its host's counters for a Prometheus scraper."""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import redis

from config.settings import Settings
from tasks.metrics import render

logger = logging.getLogger("dockyard.metrics")


def serve_metrics(settings: Settings, connection: redis.Redis) -> ThreadingHTTPServer:
    """Serve ``/metrics`` on ``metrics_bind:metrics_port`` (0: any free port) in a thread."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 - the http.server interface
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404)
                return
            try:
                body = render(connection, settings, settings.host_id).encode()
            except redis.RedisError as exc:
                self.send_error(503, f"Redis: {exc}")
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer((settings.metrics_bind, settings.metrics_port), Handler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    logger.info("metrics on http://%s:%d/metrics", *server.server_address[:2])
    return server
