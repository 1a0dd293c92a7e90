"""dockyard.tasks.engine.connection: the build network of an engine without a bridge, and the client's in-memory login (no engine)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import SecretStr

from dockyard.tasks.engine import connection as engine_module
from dockyard.tasks.engine.connection import default_build_network, docker_client, open_client, shared_client
from tests.unit.fakes import FakeEngine
from tests.unit.support import make_settings


def test_an_engine_without_a_bridge_network_gets_none() -> None:
    client = FakeEngine()
    client.bridge = False
    assert default_build_network(client) == "none"  # type: ignore[arg-type]
    assert client.network_queries == [["bridge"]]


def test_an_engine_with_a_bridge_keeps_its_default() -> None:
    client = FakeEngine()
    assert default_build_network(client) is None  # type: ignore[arg-type]


def test_a_network_whose_name_only_contains_bridge_is_not_the_bridge() -> None:
    client = FakeEngine()
    client.bridge = False  # the fake then answers the name filter with {"Name": "bridge-like"}
    assert client.api.networks(names=["bridge"]) == [{"Name": "bridge-like"}]
    assert default_build_network(client) == "none"  # type: ignore[arg-type]


def test_the_answer_is_asked_once_per_client() -> None:
    bridged, bridgeless = FakeEngine(), FakeEngine()
    bridgeless.bridge = False
    for _ in range(3):
        assert default_build_network(bridged) is None  # type: ignore[arg-type]
        assert default_build_network(bridgeless) == "none"  # type: ignore[arg-type]
    assert bridged.network_queries == [["bridge"]] and bridgeless.network_queries == [["bridge"]]


class FakeAuthConfigs:
    def __init__(self) -> None:
        self.added: list[tuple[str, dict[str, str]]] = []

    def add_auth(self, registry: str, entry: dict[str, str]) -> None:
        self.added.append((registry, entry))


class FakeClient:
    made: list[dict[str, Any]] = []

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs, self.closed = kwargs, False
        self.api = type("API", (), {})()
        self.api._auth_configs = FakeAuthConfigs()
        FakeClient.made.append(kwargs)

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def clients(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    FakeClient.made = []
    monkeypatch.setattr(engine_module.docker, "DockerClient", FakeClient)
    monkeypatch.setattr(engine_module.docker, "from_env", lambda **kwargs: FakeClient(from_env=True, **kwargs))
    monkeypatch.setattr(engine_module, "_shared", {})
    return FakeClient.made


def test_the_client_is_logged_in_in_memory_when_the_registry_is_configured(clients: list[dict[str, Any]]) -> None:
    settings = make_settings(
        docker_host="tcp://engine:2375", registry_url="reg.io", registry_username="u", registry_password=SecretStr("pw"),
    )
    client: Any = open_client(settings)
    assert clients == [{"base_url": "tcp://engine:2375", "timeout": settings.task_time_limit_s}]
    assert client.api._auth_configs.added == [("reg.io", {"username": "u", "password": "pw", "serveraddress": "reg.io"})]


def test_without_a_full_registry_login_nothing_is_added(clients: list[dict[str, Any]]) -> None:
    client: Any = open_client(make_settings(docker_host=None, registry_url="reg.io", registry_username="u"))
    assert clients == [{"from_env": True, "timeout": 50}]
    assert client.api._auth_configs.added == []


def test_docker_client_closes_its_client(clients: list[dict[str, Any]]) -> None:
    with docker_client(make_settings(docker_host=None)) as client:
        assert not client.closed  # type: ignore[attr-defined]
    assert client.closed  # type: ignore[attr-defined]


def test_the_shared_client_is_one_per_engine(clients: list[dict[str, Any]]) -> None:
    first = shared_client(make_settings(docker_host="tcp://a:2375"))
    assert shared_client(make_settings(docker_host="tcp://a:2375")) is first
    assert shared_client(make_settings(docker_host="tcp://b:2375")) is not first
    assert len(clients) == 2
