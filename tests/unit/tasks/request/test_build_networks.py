"""dockyard.tasks.request.build_networks: which networks build steps may use, and the default one."""

from __future__ import annotations

from typing import Any

import pytest

from dockyard.tasks.request.build_networks import chosen_network, network_policy, network_refusal, requested_network
from dockyard.tasks.request.build_options import refused_option
from tests.unit.support import make_settings


def policy(engine_has_bridge: bool | None, **settings: Any) -> Any:
    return network_policy(make_settings(**{"allow_host_network": False, **settings}), engine_has_bridge=engine_has_bridge)


def test_unset_an_engine_without_a_bridge_allows_none_only_and_defaults_to_it() -> None:
    found = policy(False)
    assert found.allowed == {"none"} and found.default == "none" and not found.configured


def test_unset_an_engine_with_a_bridge_allows_and_defaults_to_its_bridge() -> None:
    found = policy(True)
    assert found.allowed == {"none", "bridge"} and found.default == "bridge"


def test_unset_the_caller_lets_the_bridge_through_and_knows_no_default() -> None:
    found = policy(None)
    assert found.allowed == {"none", "bridge"} and found.default is None


def test_the_setting_names_the_networks_and_its_first_is_the_default_on_any_engine() -> None:
    for engine in (True, False, None):
        found = policy(engine, build_networks=["host", "default"])
        assert found.allowed == {"none", "host", "bridge"} and found.default == "host" and found.configured


def test_allow_host_network_adds_host() -> None:
    assert "host" in policy(False, allow_host_network=True).allowed
    assert "host" not in policy(False).allowed


@pytest.mark.parametrize(("backend", "option"), [("docker-py", "network_mode"), ("buildx", "network")])
@pytest.mark.parametrize("network", ["bridge", "default", "dockyard_default", "container:redis", "host"])
def test_a_network_outside_the_policy_is_refused_naming_the_setting(backend: str, option: str, network: str) -> None:
    reason = network_refusal({option: network}, backend, policy(False))
    assert reason is not None
    assert f"{option}={network!r}" in reason and "DOCKYARD_BUILD_NETWORKS" in reason and "allowed here: none" in reason


def test_the_host_network_refusal_also_names_allow_host_network() -> None:
    reason = network_refusal({"network_mode": "host"}, "docker-py", policy(True))
    assert reason is not None and "DOCKYARD_ALLOW_HOST_NETWORK=true" in reason and "DOCKYARD_BUILD_NETWORKS" in reason


@pytest.mark.parametrize(("backend", "option"), [("docker-py", "network_mode"), ("buildx", "network")])
def test_allowed_networks_and_none_pass(backend: str, option: str) -> None:
    assert network_refusal({option: "none"}, backend, policy(False)) is None
    assert network_refusal({}, backend, policy(False)) is None
    assert network_refusal({option: "bridge"}, backend, policy(True)) is None
    assert network_refusal({option: "default"}, backend, policy(True)) is None, "buildx's default is the bridge"
    assert network_refusal({option: "ci_net"}, backend, policy(False, build_networks=["ci_net"])) is None


def test_the_chosen_network_is_the_requests_or_the_default_spelled_for_the_backend() -> None:
    assert chosen_network({}, "docker-py", policy(False)) == "none"
    assert chosen_network({}, "docker-py", policy(True)) == "bridge"
    assert chosen_network({}, "buildx", policy(True)) == "default", "buildx calls the bridge default"
    assert chosen_network({"network": "none"}, "buildx", policy(True)) == "none"
    assert chosen_network({}, "buildx", policy(None)) is None
    assert requested_network({"network_mode": " default "}, "docker-py") == "bridge"
    assert requested_network({"network_mode": ""}, "docker-py") is None


def test_the_callers_check_uses_the_policy_and_the_workers_policy_when_given() -> None:
    settings = make_settings(allow_host_network=False)
    assert refused_option({"network_mode": "bridge"}, "docker-py", settings) is None, "the caller cannot know the engine"
    reason = refused_option({"network_mode": "bridge"}, "docker-py", settings, networks=policy(False))
    assert reason is not None and "DOCKYARD_BUILD_NETWORKS" in reason
    assert refused_option({"network_mode": "host"}, "docker-py", make_settings(allow_host_network=False, build_networks=["host"])) is None
