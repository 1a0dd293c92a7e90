"""A caller whose broker fails over before its task answers sends the task again (no broker, no farm):
``dockyard.tasks.routing.broker_watch.BrokerWatch`` and ``dockyard.tasks.client.await_build``'s ``resend``."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from dockyard.config.settings import Settings
from dockyard.tasks.routing import broker_watch
from dockyard.tasks import client
from dockyard.tasks.routing.broker_watch import BrokerWatch
from dockyard.tasks.errors import JoinTimeout
from tests.unit.support import make_settings

SENTINEL_URL = "sentinel://u:p@127.0.0.1:26395/13;sentinel://127.0.0.1:26396"


class Result:
    """An AsyncResult that answers once ``ready`` is set (a lost message never does)."""

    def __init__(self, task_id: str, answer: dict[str, Any] | None = None) -> None:
        self.id, self.answer = task_id, answer
        self.backend = self

    def get_task_meta(self, _task_id: str) -> dict[str, Any]:
        return {"status": "PENDING"}

    def ready(self) -> bool:
        return self.answer is not None

    def get(self, timeout: float) -> dict[str, Any]:
        assert self.answer is not None
        return self.answer


class Pool:
    """A sentinel pool whose master is whatever ``masters`` names next (the last one stays)."""

    def __init__(self, *masters: tuple[str, int] | Exception) -> None:
        self.masters = list(masters)

    def get_master_address(self) -> tuple[str, int]:
        master = self.masters.pop(0) if len(self.masters) > 1 else self.masters[0]
        if isinstance(master, Exception):
            raise master
        return master


def watch_of(monkeypatch: pytest.MonkeyPatch, pool: Pool) -> BrokerWatch:
    monkeypatch.setattr(broker_watch.placement, "broker_redis", lambda _settings: type("C", (), {"connection_pool": pool})())
    return BrokerWatch(make_settings(redis_url=SENTINEL_URL), every_s=0)


def test_a_new_master_is_seen_once(monkeypatch: pytest.MonkeyPatch) -> None:
    watch = watch_of(monkeypatch, Pool(("127.0.0.1", 6395), ("127.0.0.1", 6395), ("127.0.0.1", 6396)))
    assert [watch.moved(), watch.moved(), watch.moved()] == [False, True, False]


def test_no_master_for_a_moment_is_not_a_move_but_the_one_after_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    lost = redis.sentinel.MasterNotFoundError("No master found for 'dockyard'")
    watch = watch_of(monkeypatch, Pool(("127.0.0.1", 6395), lost, ("127.0.0.1", 6396)))
    assert [watch.moved(), watch.moved()] == [False, True]


def test_a_plain_redis_broker_is_never_watched() -> None:
    watch = BrokerWatch(make_settings(redis_url="redis://127.0.0.1:1/0"), every_s=0)
    assert watch.moved() is False


def await_with(monkeypatch: pytest.MonkeyPatch, moves: list[bool], first: Result, copy: Result) -> tuple[Any, list[str]]:
    """``await_build`` of ``first`` with a watch that answers ``moves`` (then False); what it returned and sent."""
    sent: list[str] = []
    answers = iter(moves)

    class Watch:
        def __init__(self, _settings: Settings) -> None:
            pass

        def moved(self) -> bool:
            return next(answers, False)

    def resend() -> Result:
        sent.append(copy.id)
        return copy

    monkeypatch.setattr(client, "BrokerWatch", Watch)
    monkeypatch.setattr(client, "_cancelled", lambda _settings, _ids: None)  # no cancel asked (no Redis here)
    spec = type("Spec", (), {"ignore_cache": True, "image_name": "app", "tag": "t"})()
    settings = make_settings(wait_wake_s=0.01)
    try:
        return client.await_build(first, spec, settings, timeout_s=0.5, resend=resend), sent  # type: ignore[arg-type]
    except JoinTimeout as exc:
        return exc, sent


def test_a_task_lost_in_a_failover_is_sent_again_and_the_copy_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    answer, sent = await_with(monkeypatch, [False, True], Result("lost"), Result("copy", {"image_id": "sha256:1"}))
    assert sent == ["copy"] and answer == {"image_id": "sha256:1"}


def test_without_a_failover_nothing_is_sent_again(monkeypatch: pytest.MonkeyPatch) -> None:
    answer, sent = await_with(monkeypatch, [], Result("lost"), Result("copy", {"image_id": "sha256:1"}))
    assert sent == [] and isinstance(answer, JoinTimeout)


def test_the_first_copy_still_answers_after_a_resend(monkeypatch: pytest.MonkeyPatch) -> None:
    first = Result("first")

    class Copy(Result):
        def ready(self) -> bool:  # asked once the copy is sent: the first survived the failover and answers now
            first.answer = {"image_id": "sha256:first"}
            return False

    answer, sent = await_with(monkeypatch, [True], first, Copy("copy"))
    assert sent == ["copy"] and answer == {"image_id": "sha256:first"}
