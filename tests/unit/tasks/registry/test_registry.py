"""dockyard.tasks.registry.manifests: one manifest HEAD per tag, basic or bearer auth, and any doubt is None.

A small registry stand-in on loopback answers the HEAD requests.
"""

from __future__ import annotations

import base64
import http.server
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from dockyard.tasks.registry import manifests as registry
from dockyard.tasks.request.spec import Credentials

DIGEST = "sha256:" + "d" * 64
USER = Credentials(username="ci", password="pw")


class Registry(http.server.BaseHTTPRequestHandler):
    """Serves ``app:live`` to ``ci:pw``; ``bearer`` switches to token auth."""

    bearer = False
    heads: list[dict[str, Any]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's name
        Registry.heads.append({"path": self.path, "accept": self.headers.get("Accept", "")})
        expected = "Bearer token-1" if self.bearer else "Basic " + base64.b64encode(b"ci:pw").decode()
        if self.headers.get("Authorization") != expected:
            self.send_response(401)
            port = self.headers.get("Host", "").rsplit(":", 1)[-1]
            challenge = (
                f'Bearer realm="http://127.0.0.1:{port}/token",service="reg",scope="repository:team/app:pull"'
                if self.bearer else 'Basic realm="reg"'
            )
            self.send_header("WWW-Authenticate", challenge)
            self.end_headers()
            return
        if self.path != "/v2/team/app/manifests/live":
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Docker-Content-Digest", DIGEST)
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802
        basic = "Basic " + base64.b64encode(b"ci:pw").decode()
        ok = self.path.startswith("/token?") and "scope=repository" in self.path and self.headers.get("Authorization") == basic
        body = b'{"token": "token-1"}' if ok else b"{}"
        self.send_response(200 if ok else 401)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def served() -> Iterator[str]:
    """The stand-in registry's host:port on loopback."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Registry)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    Registry.bearer = False
    Registry.heads = []
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_basic_auth_reads_the_digest_with_every_manifest_type(served: str) -> None:
    assert registry.served_digest(f"{served}/team/app", "live", USER) == DIGEST
    assert "application/vnd.oci.image.index.v1+json" in Registry.heads[-1]["accept"]
    assert "application/vnd.docker.distribution.manifest.v2+json" in Registry.heads[-1]["accept"]


def test_a_bearer_challenge_is_answered_with_a_token(served: str) -> None:
    Registry.bearer = True
    assert registry.served_digest(f"{served}/team/app", "live", USER) == DIGEST


@pytest.mark.parametrize(
    ("name", "tag", "credentials"),
    [
        ("team/app", "live", None),  # anonymous: refused
        ("team/app", "live", Credentials(username="ci", password="wrong")),
        ("team/app", "gone", USER),  # unknown tag
        ("team/other", "live", USER),
    ],
)
def test_doubt_is_none(served: str, name: str, tag: str, credentials: Credentials | None) -> None:
    assert registry.served_digest(f"{served}/{name}", tag, credentials) is None


def test_a_registry_that_does_not_answer_is_none() -> None:
    assert registry.served_digest("127.0.0.1:9/team/app", "live", USER) is None


def test_serves_needs_every_tag(served: str) -> None:
    assert registry.serves(f"{served}/team/app", ["live"], DIGEST, USER)
    assert not registry.serves(f"{served}/team/app", ["live", "gone"], DIGEST, USER)
    assert not registry.serves(f"{served}/team/app", ["live"], "sha256:" + "e" * 64, USER)
    assert not registry.serves(f"{served}/team/app", ["live"], None, USER)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("127.0.0.1:5000/team/app", ("127.0.0.1:5000", "team/app")),
        ("reg.io/app", ("reg.io", "app")),
        ("team/app", (registry.DOCKER_HUB, "team/app")),
        ("app", (registry.DOCKER_HUB, "library/app")),
    ],
)
def test_repository_path(name: str, expected: tuple[str, str]) -> None:
    assert registry.repository_path(name) == expected


def test_only_loopback_registries_use_plain_http() -> None:
    assert registry.base_url("127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert registry.base_url("localhost:5000") == "http://localhost:5000"
    assert registry.base_url("reg.io") == "https://reg.io"
    assert registry.base_url("10.0.0.1:5000") == "https://10.0.0.1:5000"
