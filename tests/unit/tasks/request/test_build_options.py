"""dockyard.tasks.request.build_options: each backend's allow-list, and host-reaching options refused unless a setting allows them."""

from __future__ import annotations

from typing import Any

import pytest

from dockyard.tasks.request.build_options import BUILDX_OPTIONS, DOCKER_PY_OPTIONS, host_reaching, refused_option, unknown_options
from dockyard.config.settings import Settings
from tests.unit.support import make_settings

NONE_ALLOWED = {
    "allow_host_network": False,
    "allow_local_build_io": False,
    "allow_buildx_entitlements": False,
    "allow_buildx_builder": False,
    "allow_ssh_agent": False,
}
EVERY_ALLOWED = {
    "allow_host_network": True,
    "allow_local_build_io": True,
    "allow_buildx_entitlements": True,
    "allow_buildx_builder": True,
    "allow_ssh_agent": True,
}


def settings_allowing(**allowed: bool) -> Settings:
    """Every allow_* setting pinned (the farm's environment may set some), false unless given."""
    return make_settings(**{**NONE_ALLOWED, **allowed})


# allow-lists


def test_unknown_options_are_those_outside_the_backends_list_sorted() -> None:
    given = {"nocache": True, "zeta": 1, "alpha": 2, "network": "host"}
    assert unknown_options(given, "docker-py") == ["alpha", "network", "zeta"], "network is buildx's, not docker-py's"
    assert unknown_options(given, "buildx") == ["alpha", "nocache", "zeta"], "nocache is docker-py's, not buildx's"


def test_each_backend_knows_its_own_options_and_not_dockyards() -> None:
    assert unknown_options(dict.fromkeys(DOCKER_PY_OPTIONS), "docker-py") == []
    assert unknown_options(dict.fromkeys(BUILDX_OPTIONS), "buildx") == []
    for owned in ("tag", "fileobj", "custom_context", "dockerfile", "encoding", "decode"):
        assert unknown_options({owned: "x"}, "docker-py") == [owned]
    for owned in ("tags", "file", "context_path"):
        assert unknown_options({owned: "x"}, "buildx") == [owned]


def test_an_unknown_backend_name_gets_docker_pys_list() -> None:
    assert unknown_options({"nocache": True, "network": "host"}, "podman") == ["network"]


# which uses reach the host


@pytest.mark.parametrize("option", ["network_mode", "network"])
def test_only_the_host_network_reaches_the_host(option: str) -> None:
    assert list(host_reaching({option: "host"}, "buildx")) == [(option, "allow_host_network")]
    for value in ("bridge", "none", "default", None):
        assert list(host_reaching({option: value}, "buildx")) == [], value


@pytest.mark.parametrize(
    ("value", "local"),
    [
        ("type=local,dest=out", True),
        ("type=tar,dest=out.tar", True),
        ("dest=out", True),  # no type: buildx writes a local directory
        ("out", True),  # a bare path
        ({"type": "local", "dest": "out"}, True),
        ({"dest": "out"}, True),
        ({"type": "tar", "dest": "out.tar"}, True),
        ("type=registry,ref=reg.io/app:cache", False),
        ("type=image,name=reg.io/app,push=true", False),
        ("type=docker", False),
        ({"type": "registry", "ref": "reg.io/app:cache"}, False),
        ([{"type": "registry", "ref": "r/a"}, "type=local,dest=out"], True),
        (["type=registry,ref=r/a", "type=inline"], False),
    ],
)
def test_buildx_outputs_and_caches_reach_the_host_when_local_or_tar(value: Any, local: bool) -> None:
    for option in ("output", "cache_to", "cache_from"):
        expected = [(option, "allow_local_build_io")] if local else []
        assert list(host_reaching({option: value}, "buildx")) == expected, (option, value)


def test_docker_py_cache_from_is_image_names_never_host_io() -> None:
    assert list(host_reaching({"cache_from": ["reg.io/app:latest", "out"]}, "docker-py")) == []


@pytest.mark.parametrize(
    ("contexts", "reaches"),
    [
        ({"base": "docker-image://alpine:3.20"}, False),
        ({"src": "https://github.com/o/r.git"}, False),
        ({"src": "git@github.com:o/r.git"}, False),
        ({"layout": "oci-layout://./layout"}, False),
        ({"stage": "target:builder"}, False),
        ({"src": "../elsewhere"}, True),
        ({"src": "/etc"}, True),
        ({"base": "docker-image://alpine", "src": "./local"}, True),
        ("../elsewhere", True),
    ],
)
def test_build_contexts_reach_the_host_unless_every_one_is_remote(contexts: Any, reaches: bool) -> None:
    expected = [("build_contexts", "allow_local_build_io")] if reaches else []
    assert list(host_reaching({"build_contexts": contexts}, "buildx")) == expected


@pytest.mark.parametrize(
    ("option", "setting"),
    [("allow", "allow_buildx_entitlements"), ("builder", "allow_buildx_builder"), ("ssh", "allow_ssh_agent")],
)
def test_any_use_of_allow_builder_or_ssh_reaches_the_host(option: str, setting: str) -> None:
    assert list(host_reaching({option: "default"}, "buildx")) == [(option, setting)]
    for empty in (None, False, [], {}):
        assert list(host_reaching({option: empty}, "buildx")) == [], empty


def test_harmless_options_reach_nothing() -> None:
    given = {"nocache": True, "buildargs": {"A": "1"}, "labels": {"l": "v"}, "target": "prod", "pull": True}
    assert list(host_reaching(given, "docker-py")) == []


# refused unless allowed


def test_a_host_reaching_option_is_refused_naming_the_option_and_the_setting() -> None:
    reason = refused_option({"network_mode": "host"}, "docker-py", settings_allowing())
    assert reason is not None
    assert "network_mode='host'" in reason and "DOCKYARD_ALLOW_HOST_NETWORK=true" in reason


def test_the_setting_allows_exactly_its_options() -> None:
    given = {"network": "host", "output": "type=local,dest=out"}
    only_network = settings_allowing(allow_host_network=True)
    reason = refused_option(given, "buildx", only_network)
    assert reason is not None and "output=" in reason and "DOCKYARD_ALLOW_LOCAL_BUILD_IO" in reason
    assert refused_option(given, "buildx", settings_allowing(allow_host_network=True, allow_local_build_io=True)) is None


def test_nothing_is_refused_when_every_setting_allows() -> None:
    given = {
        "network": "host", "output": "out", "cache_to": "type=local,dest=c", "cache_from": "type=local,src=c",
        "build_contexts": {"x": "/srv"}, "allow": ["network.host"], "builder": "b", "ssh": "default",
    }
    refused = refused_option(given, "buildx", settings_allowing())
    assert refused is not None
    assert refused_option(given, "buildx", settings_allowing(**EVERY_ALLOWED)) is None
    for setting in EVERY_ALLOWED:
        reason = refused_option(given, "buildx", settings_allowing(**{**EVERY_ALLOWED, setting: False}))
        assert reason is not None and f"DOCKYARD_{setting.upper()}=true" in reason, setting


def test_options_that_do_not_reach_the_host_need_no_setting() -> None:
    given = {"network": "none", "output": "type=registry,ref=r/a", "build_contexts": {"b": "docker-image://alpine"}}
    assert refused_option(given, "buildx", settings_allowing()) is None


@pytest.mark.parametrize("value", ["type=oci,dest=/tmp/image.tar", "type=docker,dest=/tmp/image.tar", {"type": "oci", "dest": "x.tar"}])
def test_oci_and_docker_exports_to_a_file_reach_the_host(value: Any) -> None:
    assert list(host_reaching({"output": value}, "buildx")) == [("output", "allow_local_build_io")]
