"""dockyard.tasks.routing.router: pushes follow their image to its host's queue (fakeredis behind get_settings)."""

from __future__ import annotations

from typing import Any

import fakeredis
import pytest
from celery import Celery

import dockyard.config.settings
import dockyard.tasks.keyspace
from dockyard.config.celery import celery_config
from dockyard.config.settings import Settings
from dockyard.tasks.celery_app import create_celery
from dockyard.tasks.farm.hosts import beat, forget_host, record_image
from dockyard.tasks.task_names import BUILD_TASK, PING_TASK, PUSH_TASK
from dockyard.tasks.routing.router import route_task
from tests.unit.support import make_settings


@pytest.fixture
def routed(monkeypatch: pytest.MonkeyPatch, fake_redis: fakeredis.FakeRedis) -> Settings:
    """Routing reads ``get_settings()`` and ``redis_for``: point both at unit objects."""
    settings = make_settings(default_namespace="team")
    monkeypatch.setattr(dockyard.config.settings, "get_settings", lambda: settings)
    monkeypatch.setattr(dockyard.tasks.keyspace, "redis_for", lambda _settings: fake_redis)
    return settings


def index(connection: fakeredis.FakeRedis, settings: Settings, host: str, *references: str) -> None:
    record_image(connection, settings, host_id=host, image_id="sha256:" + host, references=references)


def test_a_chained_push_goes_to_the_host_named_by_the_build_result(routed: Settings) -> None:
    build_result = {"image_name": "team/app", "tag": "v1", "host": "h"}
    assert route_task(PUSH_TASK, [build_result], {}, {}) == {"queue": "dockyard.host.h@default"}


def test_a_build_result_given_by_keyword_routes_too(routed: Settings) -> None:
    assert route_task(PUSH_TASK, [], {"build_result": {"host": "h"}}, {}) == {"queue": "dockyard.host.h@default"}


def test_a_lone_push_goes_to_the_live_host_indexing_its_image(
    routed: Settings, fake_redis: fakeredis.FakeRedis
) -> None:
    index(fake_redis, routed, "h2", "reg.io/team/app:v1")
    beat(fake_redis, routed, "h2", {})
    kwargs = {"image_name": "reg.io/team/app", "tag": "v1"}
    assert route_task(PUSH_TASK, [], kwargs, {}) == {"queue": "dockyard.host.h2@default"}


def test_a_lone_push_without_tag_looks_up_latest(routed: Settings, fake_redis: fakeredis.FakeRedis) -> None:
    index(fake_redis, routed, "h2", "team/app:latest")
    beat(fake_redis, routed, "h2", {})
    assert route_task(PUSH_TASK, [], {"image_name": "team/app"}, {}) == {"queue": "dockyard.host.h2@default"}


def test_a_lone_push_qualifies_the_name_with_the_default_namespace(
    routed: Settings, fake_redis: fakeredis.FakeRedis
) -> None:
    index(fake_redis, routed, "h3", "team/app:v1")
    beat(fake_redis, routed, "h3", {})
    assert route_task(PUSH_TASK, [], {"image_name": "app", "tag": "v1"}, {}) == {"queue": "dockyard.host.h3@default"}


def test_a_lone_push_of_an_image_on_a_dead_host_takes_the_default(
    routed: Settings, fake_redis: fakeredis.FakeRedis
) -> None:
    index(fake_redis, routed, "h2", "team/app:v1")
    beat(fake_redis, routed, "h2", {})
    forget_host(fake_redis, routed, "h2")
    assert route_task(PUSH_TASK, [], {"image_name": "team/app", "tag": "v1"}, {}) is None


def test_a_lone_push_of_an_image_nobody_indexed_takes_the_default(
    routed: Settings, fake_redis: fakeredis.FakeRedis
) -> None:
    beat(fake_redis, routed, "h2", {})
    assert route_task(PUSH_TASK, [], {"image_name": "team/app", "tag": "v1"}, {}) is None


@pytest.mark.parametrize(
    "kwargs",
    [{"image_name": "bad name", "tag": "v1"}, {"image_name": 5}, {"image_name": "team/app", "tag": 7}, {}],
    ids=["space in name", "name not a string", "tag not a string", "no name"],
)
def test_a_lone_push_with_bad_arguments_takes_the_default_and_leaves_the_error_to_the_task(
    routed: Settings, kwargs: dict[str, object]
) -> None:
    assert route_task(PUSH_TASK, [], kwargs, {}) is None


def test_the_build_result_wins_over_the_index(routed: Settings, fake_redis: fakeredis.FakeRedis) -> None:
    index(fake_redis, routed, "h2", "team/app:v1")
    beat(fake_redis, routed, "h2", {})
    kwargs = {"image_name": "team/app", "tag": "v1"}
    assert route_task(PUSH_TASK, [{"host": "h1"}], kwargs, {}) == {"queue": "dockyard.host.h1@default"}


def test_builds_take_the_default_route(routed: Settings, fake_redis: fakeredis.FakeRedis) -> None:
    index(fake_redis, routed, "h2", "team/app:v1")
    beat(fake_redis, routed, "h2", {})
    assert route_task(BUILD_TASK, [{"host": "h2"}], {"image_name": "team/app", "tag": "v1"}, {}) is None



def test_every_route_is_a_queue_of_the_callers_team(
    routed: Settings, fake_redis: fakeredis.FakeRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    index(fake_redis, routed, "h2", "team/app:v1")  # a tag of team default's
    beat(fake_redis, routed, "h2", {})
    theirs = routed.model_copy(update={"team": "team-a"})
    monkeypatch.setattr(dockyard.config.settings, "get_settings", lambda: theirs)
    assert route_task(PUSH_TASK, [{"host": "h1"}], {}, {}) == {"queue": "dockyard.host.h1@team-a"}
    lone = {"image_name": "team/app", "tag": "v1"}
    assert route_task(PUSH_TASK, [], lone, {}) is None, "another team's tag locates nothing"
    index(fake_redis, theirs, "h2", "team/app:v1")
    assert route_task(PUSH_TASK, [], lone, {}) == {"queue": "dockyard.host.h2@team-a"}


def test_a_callers_default_queue_is_its_teams_shared_queue() -> None:
    """What the router leaves (None) goes to the app's default queue: the team's shared queue."""
    conf = create_celery(make_settings(team="team-a", build_queue="pool")).conf
    assert conf.task_default_queue == "pool@team-a"
    assert celery_config(make_settings())["task_default_queue"] == "dockyard.build@default"


def test_inside_a_task_every_route_is_a_queue_of_the_tasks_team(routed: Settings) -> None:
    """A worker's own sends (a hand-over, a forward) stay with the team of the message it runs."""
    app = Celery("unit-routing")

    @app.task
    def sends(name: str, args: list[Any]) -> dict[str, str] | None:
        return route_task(name, args, {}, {})

    assert sends.apply(args=(PING_TASK, []), routing_key="dockyard.host.h1@team-b").get() == {"queue": "dockyard.build@team-b"}
    assert sends.apply(args=(PUSH_TASK, [{"host": "h3"}]), routing_key="dockyard.build@team-b").get() == {
        "queue": "dockyard.host.h3@team-b"
    }
    assert sends.apply(args=(PING_TASK, []), routing_key="dockyard.build").get() is None, "a message of no team"
