"""dockyard.tasks.cache.coalesce: identical calls in flight at once run once; nothing is kept afterwards."""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

from dockyard.tasks.cache import coalesce as coalesce_module
from dockyard.tasks.cache.coalesce import Coalescer

WAIT_S = 30.0  # a deadline for what must happen, not a delay: generous for a loaded machine


class Waiting:
    """How many callers block on a run's answer (``Future.result``) in ``dockyard.tasks.cache.coalesce``."""

    def __init__(self) -> None:
        self.count = 0
        self.changed = threading.Condition()

    def until(self, count: int) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: self.count >= count, WAIT_S)


@pytest.fixture
def waiting(monkeypatch: pytest.MonkeyPatch) -> Waiting:
    """The coalescer's futures count the callers that wait on them."""
    seen = Waiting()

    class Watched(Future):  # type: ignore[type-arg]
        def result(self, timeout: float | None = None) -> Any:
            with seen.changed:
                seen.count += 1
                seen.changed.notify_all()
            return super().result(timeout)

    monkeypatch.setattr(coalesce_module, "Future", Watched)
    return seen


def test_callers_that_ask_while_a_call_runs_share_its_answer(waiting: Waiting) -> None:
    coalescer: Coalescer[int] = Coalescer()
    runs: list[int] = []
    release = threading.Event()

    def slow() -> int:
        runs.append(1)
        release.wait(WAIT_S)
        return 42

    with ThreadPoolExecutor(20) as pool:
        answers = [pool.submit(coalescer.run, "k", slow) for _ in range(20)]
        try:
            assert waiting.until(19), f"19 callers wait on the one run, not {waiting.count} (runs: {len(runs)})"
        finally:
            release.set()
        assert [each.result(WAIT_S) for each in answers] == [42] * 20
    assert len(runs) == 1


def test_a_call_after_the_run_ended_asks_again() -> None:
    coalescer: Coalescer[int] = Coalescer()
    answers = iter([1, 2])
    assert coalescer.run("k", lambda: next(answers)) == 1
    assert coalescer.run("k", lambda: next(answers)) == 2


def test_different_keys_do_not_share() -> None:
    coalescer: Coalescer[str] = Coalescer()
    assert coalescer.run("a", lambda: "a") == "a" and coalescer.run("b", lambda: "b") == "b"


def test_the_failure_reaches_every_caller_of_the_run_and_is_not_kept(waiting: Waiting) -> None:
    coalescer: Coalescer[int] = Coalescer()
    runs: list[int] = []
    release = threading.Event()

    def failing() -> int:
        runs.append(1)
        release.wait(WAIT_S)
        raise ValueError("no answer")

    with ThreadPoolExecutor(5) as pool:
        answers = [pool.submit(coalescer.run, "k", failing) for _ in range(5)]
        try:
            assert waiting.until(4), f"4 callers wait on the one run, not {waiting.count}"
        finally:
            release.set()
        for each in answers:
            with pytest.raises(ValueError, match="no answer"):
                each.result(WAIT_S)
    assert len(runs) == 1, "one run failed for all five"
    assert coalescer.run("k", lambda: 7) == 7
