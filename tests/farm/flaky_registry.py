"""A registry proxy on loopback that answers 503 to its first requests, then forwards.

It adds the registry's basic auth itself, so clients need no login for it.
"""

from __future__ import annotations

import base64
import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "host", "authorization"}


class FlakyRegistry:
    """Serve on 127.0.0.1:<port>, fail ``failures`` requests with 503, then proxy to ``upstream``."""

    def __init__(self, upstream: str, username: str, password: str, *, failures: int) -> None:
        self.upstream = upstream
        self.auth = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
        self.failures_left = failures
        self.failed = 0
        self.forwarded = 0
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FlakyRegistry:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _should_fail(self) -> bool:
        with self._lock:
            if self.failures_left > 0:
                self.failures_left -= 1
                self.failed += 1
                return True
            self.forwarded += 1
            return False

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: object) -> None:
                pass

            def _forward(self) -> None:
                if proxy._should_fail():
                    self.send_response(503, "Service Unavailable")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS}
                headers["Authorization"] = proxy.auth
                upstream = http.client.HTTPConnection(proxy.upstream, timeout=30)
                upstream.request(self.command, self.path, body=body, headers=headers)
                response = upstream.getresponse()
                data = response.read()
                self.send_response(response.status, response.reason)
                for name, value in response.getheaders():
                    if name.lower() not in HOP_HEADERS | {"content-length"}:
                        self.send_header(name, value)
                # a HEAD answer has no body but tells the size of the GET's (clients read it as the blob's size)
                length_of = response.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", length_of or str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                upstream.close()

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

        return Handler
