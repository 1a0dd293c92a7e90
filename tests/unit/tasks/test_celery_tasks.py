"""dockyard.tasks.celery_tasks without Celery running: the plain helpers, and the tasks' bodies called through ``.run``.

``.run`` is the task's function (``self`` bound), so the worker's checks run
here without a broker or worker; Redis, the engine and the operations under
the task are replaced.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
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
from dockyard.tasks.errors import InvalidInput, NotPermitted
from dockyard.tasks.prepare import prepare_build
from dockyard.tasks.request.sealing import generate_keypair
from dockyard.tasks.request.spec import BuildSpec, Credentials, PushRequest, spec_key
from tests.unit.fakes import FakeEngine
from tests.unit.support import Clock, make_settings, write_teams

BUILT = {"image_name": "reg.io/team/app", "tag": "v1", "image": "reg.io/team/app:v1", "image_id": "sha256:" + "a" * 64, "additional_tags": ["latest"]}
PUBLIC_KEY, PRIVATE_KEY = generate_keypair()
CREDENTIALS = {"username": "ci", "password": "pw-unit", "registry_url": "reg.io"}
TASKS = (build_task, tag_task, push_task)


@contextlib.contextmanager
def from_queue(routing_key: str | None) -> Iterator[None]:
    """The tasks' requests as the worker's transport stamps them: taken from ``routing_key``."""
    for task in TASKS:
        task.push_request(delivery_info={"exchange": "", "routing_key": routing_key})
    try:
        yield
    finally:
        for task in TASKS:
            task.pop_request()


@pytest.fixture(autouse=True)
def team_queue_request() -> Iterator[None]:
    """Every task body here runs for a message taken from team default's shared queue."""
    with from_queue("dockyard.build@default"):
        yield


@pytest.fixture
def settings() -> Settings:
    """A worker's settings: the farm's private key, clear credentials refused (the default)."""
    return make_settings(seal_private_key=PRIVATE_KEY, seal_ttl_s=600)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch, fake_redis: fakeredis.FakeRedis, settings: Settings) -> list[tuple[str, Any]]:
    """The worker's settings, fakeredis, no engine; the operations record what they were given."""
    recorded: list[tuple[str, Any]] = []

    def no_engine(_settings: Settings) -> object:
        return FakeEngine()  # it builds nothing here: execute_build is replaced

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
    assert retry_queue(came_from("dockyard.host.dead@default"), here) == "pool@default"
    assert retry_queue(came_from("dockyard.host.dead.fast@team-b"), here) == "pool@team-b", "the team's own shared queue"
    assert retry_queue(came_from("dockyard.host.h1@default"), here) is None, "its own queue: this live host again"
    assert retry_queue(came_from("pool@default"), here) is None
    assert retry_queue(came_from("dockyard.host.dead"), here) is None, "a queue of no team: nowhere else"
    assert retry_queue(SimpleNamespace(delivery_info=None), here) is None


# the team of a message: the queue it came from


@pytest.mark.parametrize(
    "routing_key", ["dockyard.build@intruder", "dockyard.build", "dockyard.host.h1", None],
    ids=["undeclared team", "farm queue", "host queue", "none"],
)
def test_a_message_from_a_queue_of_no_declared_team_runs_nothing(
    calls: list[Any], settings: Settings, tmp_path: Path, routing_key: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    counted: list[str] = []
    monkeypatch.setattr(celery_tasks, "count_delivery", lambda _connection, _settings, task_id, _retries: counted.append(task_id))
    spec = a_spec(settings, tmp_path)
    result = build_task.apply(kwargs={"spec": spec}, routing_key=routing_key)
    assert result.failed() and isinstance(result.result, InvalidInput)
    assert "belongs to no team declared on this farm" in str(result.result) and "declared: default" in str(result.result)
    assert calls == [], "nothing was built"
    assert counted == [], "refused before anything, its delivery count included"
    assert build_task.apply(kwargs={"spec": spec}, routing_key="dockyard.build@default").successful()
    assert len(counted) == 1


def test_a_message_from_a_declared_teams_queue_runs_for_that_team(
    calls: list[Any], settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = a_spec(settings, tmp_path)
    assert build_task.apply(kwargs={"spec": spec}, routing_key="dockyard.build@default").successful()
    assert calls == [("build", BuildSpec.parse(spec))]
    farm = make_settings(seal_private_key=PRIVATE_KEY, teams_file=write_teams(tmp_path, {"team-a": [], "team-b": []}))
    monkeypatch.setattr(celery_tasks, "get_settings", lambda: farm)
    teams: list[str] = []
    monkeypatch.setattr(celery_tasks, "execute_build", lambda spec, *, here, **_: teams.append(here.settings.team) or {**BUILT})
    assert build_task.apply(kwargs={"spec": spec}, routing_key="dockyard.host.h1@team-b").successful()
    assert teams == ["team-b"], "the task's settings are the team's"
    refused = build_task.apply(kwargs={"spec": spec}, routing_key="dockyard.build@default")
    assert isinstance(refused.result, InvalidInput), "default is not declared on this farm"
    assert "declared: team-a, team-b" in str(refused.result)


def test_a_build_with_another_teams_secrets_is_refused(calls: list[Any], settings: Settings, tmp_path: Path) -> None:
    message = {**a_spec(settings, tmp_path), "build_backend": "buildx", "sealed_secrets": {"sealed": "x"},
               "secret_ids": ["token"], "secrets_owner": "team-b"}
    message["key"] = spec_key(BuildSpec.model_construct(**message))
    with pytest.raises(InvalidInput, match="secrets are team team-b's; it came from team default"):
        build_task.run(spec=message)
    assert calls == []


# pushes: the team's repositories with the farm's login, seals of its own


@pytest.fixture
def two_teams(calls: list[Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Settings:
    """A farm of team-a (pushing to reg.io/team-a/* with the farm's login) and team-b (nowhere)."""
    farm = make_settings(
        seal_private_key=PRIVATE_KEY, seal_ttl_s=600, teams_file=write_teams(tmp_path, {"team-a": ["reg.io/team-a/*"], "team-b": []}),
    )
    monkeypatch.setattr(celery_tasks, "get_settings", lambda: farm)
    return farm


def test_a_push_with_the_farms_login_goes_only_to_the_teams_repositories(two_teams: Settings, calls: list[Any]) -> None:
    with from_queue("dockyard.build@team-a"):
        with pytest.raises(NotPermitted, match=r"Team team-a may push with the farm's registry login only to reg\.io/team-a/\*; reg\.io/team/app"):
            push_task.run(BUILT)
        assert calls == []
        push_task.run({**BUILT, "image_name": "reg.io/team-a/app"})
    (kind, (request, credentials)), = calls
    assert (kind, request.image_name, credentials) == ("push", "reg.io/team-a/app", None)
    with from_queue("dockyard.build@team-b"), pytest.raises(NotPermitted, match="only to none"):
        push_task.run({**BUILT, "image_name": "reg.io/team-a/app"})


def test_a_push_with_the_teams_own_credentials_goes_anywhere(
    two_teams: Settings, calls: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    with from_queue("dockyard.build@team-b"):
        push_task.run(BUILT, **sealed_by(monkeypatch, "team-b"))
    (_kind, (request, credentials)), = calls
    assert request.image_name == "reg.io/team/app" and credentials == Credentials.parse(CREDENTIALS)


def test_credentials_sealed_by_one_team_do_not_open_in_another_teams_message(
    two_teams: Settings, calls: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    lifted = sealed_by(monkeypatch, "team-a")
    with from_queue("dockyard.build@team-b"), pytest.raises(InvalidInput, match="could not be opened for team team-b"):
        push_task.run(BUILT, **lifted)
    assert calls == []


def test_credentials_sealed_for_one_repository_do_not_push_to_another(
    calls: list[Any], settings: Settings, fake_redis: fakeredis.FakeRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client, "redis_for", lambda _settings: fake_redis)  # the caller looks for the image first
    direct = sealed(image_name="reg.io/team/app", tag="v1")
    assert direct["credentials"]["repository"] == "reg.io/team/app"
    request = PushRequest.parse({**direct, "image_name": "reg.io/team/other"})
    with pytest.raises(InvalidInput, match="sealed for a push to reg.io/team/app, not to reg.io/team/other"):
        opened_credentials(request, settings)
    forged = PushRequest.parse({**direct, "image_name": "reg.io/team/other",
                                "credentials": {**direct["credentials"], "repository": "reg.io/team/other"}})
    with pytest.raises(InvalidInput, match="could not be opened"):
        opened_credentials(forged, settings)
    assert opened_credentials(PushRequest.parse(direct), settings) == Credentials.parse(CREDENTIALS)


def sealed_by(monkeypatch: pytest.MonkeyPatch, team: str) -> dict[str, Any]:
    """A chained push's kwargs as a caller of ``team`` writes them."""
    with monkeypatch.context() as patched:
        patched.setattr(client, "get_settings", lambda: make_settings(seal_public_key=PUBLIC_KEY, seal_ttl_s=600, team=team))
        return sealed()


# cancel (dockyard.tasks.teams.cancel)


def test_a_task_its_team_cancelled_answers_cancelled_without_running(
    calls: list[Any], settings: Settings, tmp_path: Path, fake_redis: fakeredis.FakeRedis
) -> None:
    from dockyard.tasks.errors import Cancelled
    from dockyard.tasks.teams import cancel

    spec = a_spec(settings, tmp_path)
    cancel.request_cancel(fake_redis, settings, "queued-1")
    result = build_task.apply(kwargs={"spec": spec}, routing_key="dockyard.build@default", task_id="queued-1")
    assert result.failed() and isinstance(result.result, Cancelled)
    assert "Task queued-1 was cancelled by its team (it did not start)" in str(result.result)
    assert calls == [], "nothing was built"
    assert build_task.apply(kwargs={"spec": spec}, routing_key="dockyard.build@default", task_id="other").successful()


def test_a_cancel_is_read_in_the_team_of_the_queue_the_task_came_from(
    calls: list[Any], settings: Settings, tmp_path: Path, fake_redis: fakeredis.FakeRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dockyard.tasks.errors import Cancelled
    from dockyard.tasks.teams import cancel

    farm = make_settings(seal_private_key=PRIVATE_KEY, teams_file=write_teams(tmp_path, {"team-a": [], "team-b": []}))
    monkeypatch.setattr(celery_tasks, "get_settings", lambda: farm)
    monkeypatch.setattr(celery_tasks, "execute_build", lambda spec, **_: {**BUILT})
    spec = a_spec(settings, tmp_path)
    cancel.request_cancel(fake_redis, farm.model_copy(update={"team": "team-b"}), "a-task")  # B asks for A's task
    assert build_task.apply(kwargs={"spec": spec}, routing_key="dockyard.build@team-a", task_id="a-task").successful()
    refused = build_task.apply(kwargs={"spec": spec}, routing_key="dockyard.build@team-b", task_id="a-task")
    assert isinstance(refused.result, Cancelled), "B's request cancels only a task from B's own queue"


def test_a_build_cancelled_while_others_waited_answers_cancelled_after_it(
    calls: list[Any], settings: Settings, tmp_path: Path, fake_redis: fakeredis.FakeRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dockyard.tasks.errors import Cancelled
    from dockyard.tasks.teams import cancel

    built: list[str] = []

    def build_for_others(spec: BuildSpec, **kwargs: Any) -> dict[str, Any]:
        cancel.request_cancel(fake_redis, settings, "owner-1")  # cancelled mid-build; the build went on for joiners
        built.append("stored")
        return {**BUILT, "host": "h1", "cache": "built"}

    monkeypatch.setattr(celery_tasks, "execute_build", build_for_others)
    result = build_task.apply(kwargs={"spec": a_spec(settings, tmp_path)}, routing_key="dockyard.build@default", task_id="owner-1")
    assert built == ["stored"] and isinstance(result.result, Cancelled)
    assert "went on for any other call waiting for it" in str(result.result)
