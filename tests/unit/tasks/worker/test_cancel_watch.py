"""The worker's side of a cancel: the watch of a running build, the owner's build stopped, a joiner leaving."""

from __future__ import annotations

import threading
from typing import Any

import fakeredis
import pytest

from dockyard.tasks.cache.single_flight import SingleFlight, build_cache
from dockyard.tasks.cache.waiters import Waiting
from dockyard.tasks.errors import BuildError, Cancelled
from dockyard.tasks.teams import cancel
from dockyard.tasks.worker import build as worker_build
from dockyard.tasks.worker.cancel_watch import CancelWatch
from dockyard.tasks.worker.here import Here
from tests.unit.support import make_settings


def watch(connection: fakeredis.FakeRedis, **settings: Any) -> CancelWatch:
    return CancelWatch(connection, make_settings(**settings), task_id="t1", cache_key="k", poll_s=0.01)


def test_an_uncancelled_build_is_left_alone(fake_redis: fakeredis.FakeRedis) -> None:
    seen = watch(fake_redis)
    assert seen.look() is False and not seen.cancelled.is_set() and not seen.stopped


def test_a_cancelled_build_no_one_else_waits_for_is_stopped(fake_redis: fakeredis.FakeRedis) -> None:
    seen = watch(fake_redis)
    cancel.request_cancel(fake_redis, seen.settings, "t1")
    assert seen.look() is True and seen.stopped


def test_a_cancelled_build_others_wait_for_goes_on_until_the_last_leaves(fake_redis: fakeredis.FakeRedis) -> None:
    seen = watch(fake_redis)
    cancel.request_cancel(fake_redis, seen.settings, "t1")
    with Waiting(fake_redis, make_settings(), "k"):
        assert seen.look() is False and seen.cancelled.is_set() and not seen.stopped
    assert seen.look() is True and seen.stopped, "no one waits any more"


def test_another_teams_request_does_not_cancel(fake_redis: fakeredis.FakeRedis) -> None:
    seen = watch(fake_redis, team="team-a")
    cancel.request_cancel(fake_redis, make_settings(team="team-b"), "t1")
    assert seen.look() is False and not seen.stopped


def test_the_watch_thread_stops_the_build_it_watches(fake_redis: fakeredis.FakeRedis) -> None:
    stopped = threading.Event()
    with watch(fake_redis) as seen:
        seen.stop.attach(stopped.set)
        cancel.request_cancel(fake_redis, seen.settings, "t1")
        assert stopped.wait(5), "the thread saw the request and stopped the build"


def here_of(connection: fakeredis.FakeRedis) -> Here:
    return Here(make_settings(), connection, object(), lambda _text: None)  # type: ignore[arg-type]


def test_build_watched_turns_a_stopped_build_into_cancelled(
    fake_redis: fakeredis.FakeRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    def engine_build(spec: object, *, here: Here, stop: Any) -> str:
        cancel.request_cancel(fake_redis, here.settings, "t1")
        assert stop.requested.wait(5), "the watch stopped it"
        raise BuildError("the stream broke")  # what the engine's side raises once its stream is shut

    monkeypatch.setattr(worker_build, "build_racing_removals", engine_build)
    monkeypatch.setattr(worker_build, "CancelWatch", lambda *a, **k: CancelWatch(*a, **k, poll_s=0.01))
    with pytest.raises(Cancelled, match="Task t1 was cancelled by its team \\(its build was stopped on the engine\\)"):
        worker_build.build_watched(object(), "k", here=here_of(fake_redis), owner="t1")  # type: ignore[arg-type]


def test_build_watched_does_not_start_a_cancelled_build(
    fake_redis: fakeredis.FakeRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[object] = []
    monkeypatch.setattr(worker_build, "build_racing_removals", lambda spec, **_: started.append(spec) or "sha256:x")
    cancel.request_cancel(fake_redis, make_settings(), "t1")
    with pytest.raises(Cancelled, match="before its build started"):
        worker_build.build_watched(object(), "k", here=here_of(fake_redis), owner="t1")  # type: ignore[arg-type]
    assert started == []
    assert worker_build.build_watched(object(), "k", here=here_of(fake_redis), owner=None) == "sha256:x"  # type: ignore[arg-type]


def test_a_cancelled_owner_announces_no_failure_and_lets_go_of_its_lease(fake_redis: fakeredis.FakeRedis) -> None:
    settings = make_settings()
    cache = build_cache(fake_redis, settings)

    def stopped() -> dict[str, str]:
        raise Cancelled("stopped on the engine")

    with pytest.raises(Cancelled):
        cache.run("k", stopped)
    assert cache.peek("k") is None, "nothing is stored"
    assert not fake_redis.exists("unit:lease:k") and not fake_redis.exists("unit:failed:k")
    assert cache.run("k", lambda: {"image_id": "sha256:1"}).source == "built", "the next caller builds it"

    with pytest.raises(BuildError):
        cache.run("j", lambda: (_ for _ in ()).throw(BuildError("RUN failed")))
    assert fake_redis.exists("unit:failed:j"), "a real failure is announced (the contrast)"


def test_a_cancelled_joiner_leaves_the_build_and_its_mark(fake_redis: fakeredis.FakeRedis) -> None:
    settings = make_settings(wait_wake_s=0.05)
    cache: SingleFlight = build_cache(fake_redis, settings)
    assert cache.lease("k").acquire(), "another owner builds k"
    asked = iter([False, False, True])

    def check() -> None:
        if next(asked):
            assert fake_redis.zcard("unit:team:default:waiting:k") == 1, "it was marked as waiting"
            raise Cancelled("left")

    with pytest.raises(Cancelled):
        cache.run("k", lambda: {"image_id": "sha256:1"}, check_cancel=check)
    assert fake_redis.zcard("unit:team:default:waiting:k") == 0, "its mark went with it"
    assert fake_redis.exists("unit:lease:k"), "the owner's build goes on"
