"""dockyard.tasks.cache.coalesce: identical calls in flight at once run once; nothing is kept afterwards."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from dockyard.tasks.cache.coalesce import Coalescer


def test_callers_that_ask_while_a_call_runs_share_its_answer() -> None:
    coalescer: Coalescer[int] = Coalescer()
    runs: list[int] = []
    release = threading.Event()

    def slow() -> int:
        runs.append(1)
        release.wait(5)
        return 42

    with ThreadPoolExecutor(20) as pool:
        answers = [pool.submit(coalescer.run, "k", slow) for _ in range(20)]
        time.sleep(0.2)
        release.set()
        assert [each.result() for each in answers] == [42] * 20
    assert len(runs) == 1


def test_a_call_after_the_run_ended_asks_again() -> None:
    coalescer: Coalescer[int] = Coalescer()
    answers = iter([1, 2])
    assert coalescer.run("k", lambda: next(answers)) == 1
    assert coalescer.run("k", lambda: next(answers)) == 2


def test_different_keys_do_not_share() -> None:
    coalescer: Coalescer[str] = Coalescer()
    assert coalescer.run("a", lambda: "a") == "a" and coalescer.run("b", lambda: "b") == "b"


def test_the_failure_reaches_every_caller_of_the_run_and_is_not_kept() -> None:
    coalescer: Coalescer[int] = Coalescer()
    release = threading.Event()

    def failing() -> int:
        release.wait(5)
        raise ValueError("no answer")

    with ThreadPoolExecutor(5) as pool:
        answers = [pool.submit(coalescer.run, "k", failing) for _ in range(5)]
        time.sleep(0.2)
        release.set()
        for each in answers:
            with pytest.raises(ValueError, match="no answer"):
                each.result()
    assert coalescer.run("k", lambda: 7) == 7
