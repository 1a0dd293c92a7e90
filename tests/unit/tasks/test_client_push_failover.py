"""A push whose broker fails over before it answers is sent again, as a build is (no broker, no farm):
``dockyard.tasks.client.push`` waits with ``await_task`` and ``dockyard.tasks.routing.broker_watch.BrokerWatch``,
the build's waiting machinery, not Celery's result subscription (which does not follow a failover)."""

from __future__ import annotations

import threading
from typing import Any

import celery.exceptions
import pytest

from dockyard.config.settings import Settings
from dockyard.tasks import client
from dockyard.tasks.request.spec import PushRequest
from dockyard.tasks.task_names import PUSH_TASK
from tests.unit.support import make_settings

IMAGE = "sha256:" + "1" * 64
PUSHED = {"image_name": "reg.io/team/app", "tag": "v1", "digest": "sha256:pushed", "host": "h2", "cache": "built"}


class Result:
    """An AsyncResult that answers once ``answer`` is set; a lost message never does, and Celery's result
    subscription (``get`` before it is ready) waits its whole timeout for it."""

    def __init__(self, task_id: str, answer: dict[str, Any] | None = None) -> None:
        self.id, self.answer = task_id, answer

    def ready(self) -> bool:
        return self.answer is not None

    def get(self, timeout: float) -> dict[str, Any]:
        if self.answer is None:
            threading.Event().wait(timeout)
            raise celery.exceptions.TimeoutError("The operation timed out.")
        return self.answer


class Broker:
    """A caller app whose push signature sends ``results`` in turn (each ``apply_async``, first or clone's)."""

    def __init__(self, *results: Result) -> None:
        self.results = list(results)
        self.sent: list[str] = []
        self.kwargs: list[dict[str, Any]] = []

    def signature(self, name: str, *, kwargs: dict[str, Any], kwargsrepr: str) -> Any:
        assert name == PUSH_TASK
        broker = self

        class Signature:
            def apply_async(self) -> Result:
                result = broker.results.pop(0)
                broker.sent.append(result.id)
                broker.kwargs.append(kwargs)
                return result

            def clone(self) -> Signature:
                return Signature()

        return Signature()


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The image is on the farm (pinned without Redis) and the push cache has nothing for it."""
    settings = make_settings(wait_wake_s=0.01)
    monkeypatch.setattr(client, "get_settings", lambda: settings)
    monkeypatch.setattr(client, "pinned_push", lambda request, _settings: request.model_copy(update={"image_id": IMAGE}))
    monkeypatch.setattr(client, "cached_push", lambda _request, _settings: None)
    return settings


def with_moves(monkeypatch: pytest.MonkeyPatch, moves: list[bool]) -> None:
    """The broker's master changes where ``moves`` says True (then never)."""
    answers = iter(moves)

    class Watch:
        def __init__(self, _settings: Settings) -> None:
            pass

        def moved(self) -> bool:
            return next(answers, False)

    monkeypatch.setattr(client, "BrokerWatch", Watch)


def push_with(broker: Broker, timeout_s: float = 1.0) -> Any:
    try:
        return client.push("reg.io/team/app", tag="v1", app=broker, timeout_s=timeout_s)  # type: ignore[arg-type]
    except celery.exceptions.TimeoutError as exc:
        return exc


def test_a_push_lost_in_a_failover_is_sent_again_and_the_copy_answers(
    monkeypatch: pytest.MonkeyPatch, settings: Settings
) -> None:
    with_moves(monkeypatch, [False, True])
    broker = Broker(Result("lost"), Result("copy", PUSHED))
    assert push_with(broker) == PUSHED
    assert broker.sent == ["lost", "copy"]
    assert broker.kwargs[0] == broker.kwargs[1], "the copy is the same push (same image id, tags, credentials)"
    assert PushRequest.parse(broker.kwargs[1]).image_id == IMAGE


def test_without_a_failover_nothing_is_sent_again_and_the_push_times_out_as_before(
    monkeypatch: pytest.MonkeyPatch, settings: Settings
) -> None:
    with_moves(monkeypatch, [])
    broker = Broker(Result("lost"), Result("copy", PUSHED))
    answer = push_with(broker, timeout_s=0.3)
    assert broker.sent == ["lost"]
    assert isinstance(answer, celery.exceptions.TimeoutError), "the CLI reports a push's timeout by this type"
    assert "reg.io/team/app:v1" in str(answer)


def test_the_first_push_still_answers_after_a_resend(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    first = Result("first")

    class Copy(Result):
        def ready(self) -> bool:  # asked once the copy is sent: the first survived the failover and answers now
            first.answer = {**PUSHED, "digest": "sha256:first"}
            return False

    with_moves(monkeypatch, [True])
    broker = Broker(first, Copy("copy"))
    assert push_with(broker) == {**PUSHED, "digest": "sha256:first"}
    assert broker.sent == ["first", "copy"]


def test_a_push_answered_before_any_failover_is_sent_once(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    with_moves(monkeypatch, [True])  # a move seen only after the answer sends nothing
    broker = Broker(Result("only", PUSHED), Result("copy", PUSHED))
    assert push_with(broker) == PUSHED
    assert broker.sent == ["only"]
