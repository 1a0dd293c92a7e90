"""dockyard.tasks.engine.push: the push operation on one engine, with the fake engine client of tests/unit/fakes.py."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests.exceptions

from dockyard.config.settings import Settings
from dockyard.tasks.errors import InvalidInput, PushError, RegistryAuthError, RegistryUnavailable, TransientError
from dockyard.tasks.engine.push import push_in
from dockyard.tasks.local_steps import push_image
from dockyard.tasks.request.arguments import push_request
from dockyard.tasks.request.spec import Credentials, PushRequest
from tests.unit.fakes import FakeEngine, Output
from tests.unit.support import make_settings

NAME = "reg.io/team/app"




@pytest.fixture
def settings() -> Settings:
    return make_settings(default_namespace=None)


def request(**fields: Any) -> PushRequest:
    return PushRequest.parse({"image_name": NAME, **fields})


def push(engine: FakeEngine, settings: Settings, req: PushRequest, credentials: Credentials | None = None) -> Any:
    return push_in(req, credentials, client=engine, settings=settings, output=Output())  # type: ignore[arg-type]


# push_in


def test_each_tag_is_pushed_in_order_and_the_first_tags_digest_returned(engine: FakeEngine, settings: Settings) -> None:
    output = Output()
    digest = push_in(request(tag="v1", additional_tags=["v2", "latest"]), None, client=engine, settings=settings, output=output)  # type: ignore[arg-type]
    assert engine.pushes == [f"{NAME}:v1", f"{NAME}:v2", f"{NAME}:latest"]
    assert digest == "sha256:digest-of-v1"
    assert output[:2] == [f"The push refers to repository [{NAME}]\n", "v1: digest: sha256:digest-of-v1 size: 528\n"]
    assert engine.logins == [], "no credentials: no login"


def test_no_tag_pushes_latest(engine: FakeEngine, settings: Settings) -> None:
    assert push(engine, settings, request(tag=None)) == "sha256:digest-of-latest"
    assert engine.pushes == [f"{NAME}:latest"]


def test_the_push_stops_at_the_first_error_event(engine: FakeEngine, settings: Settings) -> None:
    engine.push_error, engine.push_error_on = "manifest invalid: blob unknown", "v2"
    with pytest.raises(PushError, match=f"Pushing {NAME}:v2 failed: manifest invalid") as raised:
        push(engine, settings, request(tag="v1", additional_tags=["v2", "v3"]))
    assert not isinstance(raised.value, TransientError)
    assert engine.pushes == [f"{NAME}:v1", f"{NAME}:v2"], "v3 is never pushed"


def test_a_registry_outage_while_pushing_is_transient(engine: FakeEngine, settings: Settings) -> None:
    engine.push_error = "received unexpected HTTP status: 503 Service Unavailable"
    with pytest.raises(RegistryUnavailable):
        push(engine, settings, request(tag="v1", additional_tags=["v2"]))
    assert engine.pushes == [f"{NAME}:v1"]


def test_a_missing_image_is_a_push_error(engine: FakeEngine, settings: Settings) -> None:
    engine.push_missing = True
    with pytest.raises(PushError, match=f"No image {NAME}:v1 on this host") as raised:
        push(engine, settings, request(tag="v1"))
    assert not isinstance(raised.value, TransientError)


def test_an_unreachable_engine_while_pushing_is_transient(engine: FakeEngine, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    def unreachable(**kwargs: Any) -> Iterator[dict[str, Any]]:
        raise requests.exceptions.ConnectionError("connection aborted")
        yield {}

    monkeypatch.setattr(engine.api, "push", unreachable)
    with pytest.raises(RegistryUnavailable, match="unreachable while pushing"):
        push(engine, settings, request(tag="v1"))


# login


def test_credentials_log_in_to_their_registry_before_pushing(engine: FakeEngine, settings: Settings) -> None:
    credentials = Credentials.parse({"username": "u", "password": "pw", "registry_url": "other.io", "reauth": False})
    push(engine, settings, request(tag="v1"), credentials)
    assert engine.logins == [{"username": "u", "password": "pw", "registry": "other.io", "reauth": False}]
    assert engine.pushes == [f"{NAME}:v1"]


def test_credentials_without_a_registry_log_in_to_the_images(engine: FakeEngine, settings: Settings) -> None:
    push(engine, settings, request(tag="v1"), Credentials.parse({"username": "u", "password": "pw"}))
    assert engine.logins[0]["registry"] == "reg.io"
    hub = FakeEngine()
    push(hub, settings, PushRequest.parse({"image_name": "team/app", "tag": "v1"}), Credentials.parse({"username": "u", "password": "pw"}))
    assert hub.logins[0]["registry"] is None, "Docker Hub"


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ("unauthorized: incorrect username or password", RegistryAuthError),
        ("Get https://reg.io/v2/: dial tcp: connection refused", RegistryUnavailable),
        ("something else went wrong", RegistryAuthError),
    ],
)
def test_login_errors_are_mapped_and_nothing_is_pushed(
    engine: FakeEngine, settings: Settings, message: str, kind: type[Exception]
) -> None:
    engine.login_error = message
    with pytest.raises(kind, match="Login to reg.io failed") as raised:
        push(engine, settings, request(tag="v1"), Credentials.parse({"username": "u", "password": "pw"}))
    assert type(raised.value) is kind
    assert engine.pushes == []


# push_request and push_image


def test_push_request_qualifies_the_name_and_fills_defaults() -> None:
    req = push_request("app", settings=make_settings(default_namespace="team"))
    assert (req.image_name, req.tag, req.additional_tags, req.credentials) == ("team/app", None, [], None)
    assert req.tags == ["latest"] and req.reference == "team/app:latest"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"credentials": "u:pw"}, "credentials must be a mapping"),
        ({"credentials": {"username": "u", "password": "pw", "token": "t"}}, r"Unknown credentials keys: \['token'\]"),
        ({"credentials": {"username": "u"}}, "password"),
        ({"tag": "bad tag!"}, "tag"),
        ({"additional_tags": ["ok", "Bad Tag"]}, "tag"),
        ({"build_backend": "podman"}, "Invalid build_backend"),
        ({"image_name": "Bad Name"}, "image"),
    ],
)
def test_push_request_refuses_bad_arguments(arguments: dict[str, Any], message: str) -> None:
    given = {"image_name": NAME, **arguments}
    with pytest.raises(InvalidInput, match=message):
        push_request(given.pop("image_name"), settings=make_settings(default_namespace=None), **given)


def test_push_image_refuses_sealed_credentials_before_touching_the_engine(engine: FakeEngine, settings: Settings) -> None:
    with pytest.raises(InvalidInput, match="Sealed credentials are opened by a worker"):
        push_image(NAME, tag="v1", credentials={"sealed": "abc"}, settings=settings, client=engine, output=Output())  # type: ignore[arg-type]
    assert engine.pushes == [] and engine.logins == []


def test_push_image_returns_prefect_dockers_result(engine: FakeEngine, settings: Settings) -> None:
    result = push_image(
        NAME, tag="v1", additional_tags=["v2"], credentials={"username": "u", "password": "pw"},
        settings=settings, client=engine, output=Output(),  # type: ignore[arg-type]
    )
    assert result == {
        "image_name": NAME, "tag": "v1", "image": f"{NAME}:v1", "additional_tags": ["v2"], "digest": "sha256:digest-of-v1",
    }
    assert engine.logins[0]["username"] == "u" and engine.pushes == [f"{NAME}:v1", f"{NAME}:v2"]
