"""dockyard.tasks.celery_tasks without Celery running: the plain helpers, and the tasks' bodies called through ``.run``.

``.run`` is the task's function (``self`` bound), so the worker's checks run
here without a broker or worker; Redis, the engine and the operations under
the task are replaced.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from celery import Celery

from dockyard.config.settings import Settings
from dockyard.tasks import celery_tasks
from dockyard.tasks import client
from dockyard.tasks.celery_tasks import build_task, opened_credentials, push_task, tag_task, fresh_budget
from dockyard.tasks.request.chain import push_arguments
from dockyard.tasks.errors import InvalidInput
from dockyard.tasks.prepare import prepare_build
from dockyard.tasks.request.sealing import generate_keypair
from dockyard.tasks.request.spec import BuildSpec, Credentials, PushRequest
from tests.unit.support import Clock, make_settings

BUILT = {"image_name": "reg.io/team/app", "tag": "v1", "image": "reg.io/team/app:v1", "image_id": "sha256:" + "a" * 64, "additional_tags": ["latest"]}
PUBLIC_KEY, PRIVATE_KEY = generate_keypair()
CREDENTIALS = {"username": "ci", "password": "pw-unit", "registry_url": "reg.io"}


@pytest.fixture
def settings() -> Settings:
    """A worker's settings: the farm's private key, clear credentials refused (the default)."""
    return make_settings(seal_private_key=PRIVATE_KEY, seal_ttl_s=600)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch, fake_redis: fakeredis.FakeRedis, settings: Settings) -> list[tuple[str, Any]]:
    """The worker's settings, fakeredis, no engine; the operations record what they were given."""
    recorded: list[tuple[str, Any]] = []

    def no_engine(_settings: Settings) -> object:
        return object()

    def execute_build(spec: BuildSpec, **kwargs: Any) -> dict[str, Any]:
        recorded.append(("build", spec))
        return {**BUILT, "host": "h1", "cache": "built"}

    def execute_push(request: PushRequest, credentials: Credentials | None, **kwargs: Any) -> dict[str, Any]:
        recorded.append(("push", (request, credentials)))
        return {"image_name": request.image_name, "tag": request.tag, "host": "h1", "cache": "built"}

    monkeypatch.setattr(celery_tasks, "get_settings", lambda: settings)
    monkeypatch.setattr(celery_tasks, "redis_for", lambda _settings: fake_redis)
    monkeypatch.setattr(celery_tasks, "shared_client", no_engine)
    monkeypatch.setattr(celery_tasks, "execute_build", execute_build)
    monkeypatch.setattr(celery_tasks, "execute_push", execute_push)
    monkeypatch.setattr(client, "get_settings", lambda: make_settings(seal_public_key=PUBLIC_KEY, seal_ttl_s=600))
    return recorded


def a_spec(settings: Settings, tmp_path: Path) -> dict[str, Any]:
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    spec, packed = prepare_build({"image_name": "reg.io/team/app", "tag": "v1", "path": str(tmp_path)}, settings)
    packed.close()
    return spec.model_dump()


def sealed(**params: Any) -> dict[str, Any]:
    """A push message's kwargs as dockyard.tasks.client writes them (credentials sealed)."""
    return dict(client.push_signature(credentials=CREDENTIALS, app=Celery("unit-caller"), **params).kwargs)


# push_arguments


def test_push_arguments_without_a_build_are_the_params() -> None:
    assert push_arguments(None, {"image_name": "app", "tag": "v1"}) == {"image_name": "app", "tag": "v1"}


def test_push_arguments_take_name_tags_and_image_from_the_build() -> None:
    assert push_arguments(BUILT, {"credentials": {"sealed": "x"}}) == {
        "image_name": "reg.io/team/app", "tag": "v1", "additional_tags": ["latest"], "credentials": {"sealed": "x"},
        "image_id": BUILT["image_id"],
    }


def test_a_push_of_another_name_does_not_take_the_builds_image() -> None:
    assert "image_id" not in push_arguments(BUILT, {"image_name": "other/app"})


def test_explicit_push_arguments_win_over_the_build() -> None:
    merged = push_arguments(BUILT, {"image_name": "other/app", "tag": "v2", "additional_tags": []})
    assert (merged["image_name"], merged["tag"], merged["additional_tags"]) == ("other/app", "v2", [])


@pytest.mark.parametrize(
    ("build_result", "params", "message"),
    [
        (["not", "a", "dict"], {}, "build_result must be the dict"),
        ("reg.io/team/app:v1", {}, "build_result must be the dict"),
        (None, {}, "push needs image_name"),
        (None, {"image_name": ""}, "push needs image_name"),
        (None, {"image_name": 3}, "push needs image_name"),
        ({"tag": "v1"}, {}, "push needs image_name"),
    ],
)
def test_push_arguments_refuse(build_result: object, params: Mapping[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        push_arguments(build_result, params)


# opened_credentials


def test_sealed_credentials_are_opened_with_the_farms_key(calls: list[Any], settings: Settings) -> None:
    request = PushRequest.parse({"image_name": "app", **sealed()})
    assert opened_credentials(request, settings) == Credentials.parse(CREDENTIALS)


def test_no_credentials_are_none(settings: Settings) -> None:
    assert opened_credentials(PushRequest.parse({"image_name": "app"}), settings) is None


def test_clear_credentials_are_refused_unless_the_farm_accepts_them(settings: Settings) -> None:
    request = PushRequest.parse({"image_name": "app", "credentials": CREDENTIALS})
    with pytest.raises(InvalidInput, match="Clear credentials in a message are refused"):
        opened_credentials(request, settings)
    accepting = make_settings(seal_private_key=PRIVATE_KEY, accept_clear_credentials=True)
    assert opened_credentials(request, accepting) == Credentials.parse(CREDENTIALS)


def test_credentials_sealed_for_another_farm_are_refused(calls: list[Any]) -> None:
    request = PushRequest.parse({"image_name": "app", **sealed()})
    with pytest.raises(InvalidInput, match="could not be opened"):
        opened_credentials(request, make_settings(seal_private_key=generate_keypair()[1]))
    with pytest.raises(InvalidInput, match="DOCKYARD_SEAL_PRIVATE_KEY"):
        opened_credentials(request, make_settings(seal_public_key=PUBLIC_KEY))


def test_expired_sealed_credentials_are_refused(calls: list[Any], settings: Settings, clock: Clock) -> None:
    request = PushRequest.parse({"image_name": "app", **sealed()})
    clock.advance(599)
    assert opened_credentials(request, settings) is not None
    clock.advance(2)
    with pytest.raises(InvalidInput, match="expired"):
        opened_credentials(request, settings)


# build_task: the worker validates the message again


def test_build_task_runs_a_valid_spec(calls: list[tuple[str, Any]], settings: Settings, tmp_path: Path) -> None:
    spec = a_spec(settings, tmp_path)
    result = build_task.run(spec=spec)
    assert calls == [("build", BuildSpec.parse(spec))]
    assert isinstance(calls[0][1], BuildSpec)
    assert result["cache"] == "built" and result["duration_s"] >= 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"tag": "has space"}, "Invalid Docker tag"),
        ({"additional_tags": "latest"}, "additional_tags"),
        ({"key": "0" * 64}, "key does not match"),
        ({"build_kwargs": {"buildargs": {"A": "1"}}}, "key does not match"),
        ({"dockerfile": "auto", "dockerfile_lines": ["FROM evil"]}, "dockerfile_digest does not match"),
        ({"context_digest": "sha256:../../etc"}, "context_digest"),
        ({"sealed_secrets": {"sealed": "x"}}, "go together"),
        ({"injected": True}, "injected"),
    ],
    ids=lambda value: str(value)[:30],
)
def test_build_task_refuses_a_hand_made_spec(
    calls: list[tuple[str, Any]], settings: Settings, tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        build_task.run(spec={**a_spec(settings, tmp_path), **change})
    assert calls == [], "nothing was built"


def test_build_task_with_a_spec_takes_nothing_else(calls: list[Any], settings: Settings, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="takes no other arguments"):
        build_task.run(spec=a_spec(settings, tmp_path), network_mode="host")
    assert calls == []


def test_tag_task_refuses_a_hand_made_spec(calls: list[Any], settings: Settings, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="Invalid Docker tag"):
        tag_task.run(spec={**a_spec(settings, tmp_path), "tag": "a b"}, image_id="sha256:x", source="hit")


# push_task


def test_push_task_opens_sealed_credentials_for_the_push(calls: list[tuple[str, Any]]) -> None:
    result = push_task.run(BUILT, **sealed())
    (kind, (request, credentials)), = calls
    assert kind == "push" and request.reference == "reg.io/team/app:v1" and request.additional_tags == ["latest"]
    assert credentials == Credentials.parse(CREDENTIALS)
    assert result["cache"] == "built" and "duration_s" in result


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"tag": "bad tag"}, r"^Invalid Docker tag 'bad tag':"),
        ({"additional_tags": "latest"}, r"^additional_tags: Input should be a valid list"),
        ({"credentials": {"user": "x"}}, r"^Unknown credentials keys: \['user'\]"),
        ({"surprise": 1}, r"^Bad push arguments: .*unexpected keyword argument 'surprise'"),
        ({"credentials": CREDENTIALS}, r"^Clear credentials in a message are refused"),
    ],
    ids=str,
)
def test_push_task_refuses_bad_arguments(calls: list[Any], params: dict[str, Any], reason: str) -> None:
    with pytest.raises(InvalidInput, match=reason):
        push_task.run(BUILT, **params)
    assert calls == []


# fresh_budget


def test_a_takeover_retries_the_task_at_once_whatever_its_retries_so_far() -> None:
    asked: list[dict[str, Any]] = []

    class Task:
        request = type("Request", (), {"id": "t-1", "retries": 3})()

        def retry(self, **kwargs: Any) -> Exception:
            asked.append(kwargs)
            return RuntimeError("retry")

    with pytest.raises(RuntimeError, match="retry") as raised:
        fresh_budget(Task())()
    assert asked == [{"countdown": 0, "max_retries": 4, "throw": False}]
    assert getattr(raised.value, "takeover", False), "marked, so the delivery count is handed over"


def test_a_retry_of_a_message_moved_off_another_hosts_queue_goes_to_the_shared_queue() -> None:
    """Celery sends a retry where its message was first routed; a message placed on a host that died
    and was moved to the shared queue would retry into the dead host's queue, which no one consumes."""
    from types import SimpleNamespace

    from dockyard.tasks.celery_tasks import retry_queue

    here = make_settings(host_id="h1", build_queue="pool")
    came_from = lambda routing_key: SimpleNamespace(delivery_info={"exchange": routing_key, "routing_key": routing_key})  # noqa: E731
    assert retry_queue(came_from("dockyard.host.dead"), here) == "pool"
    assert retry_queue(came_from("dockyard.host.h1"), here) is None, "its own queue: this live host again"
    assert retry_queue(came_from("pool"), here) is None
    assert retry_queue(SimpleNamespace(delivery_info=None), here) is None
