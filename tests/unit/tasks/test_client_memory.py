"""dockyard.tasks.client.await_build keeps nothing per build once it returns: a caller sending 100,000 builds does not grow.

The caller notes the tasks whose key woke it before their result was stored
(it then gives the result a moment to land); that note must not outlive the
call, whichever way it ends (its result, an entry of the cache, a timeout):
no container the client module holds is larger after many builds than before.
No broker: a fake result, a fake key waiter that always wakes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from dockyard.config.settings import Settings
from dockyard.tasks import client
from dockyard.tasks.cache.single_flight import Entry
from dockyard.tasks.errors import JoinTimeout
from dockyard.tasks.prepare import prepare_build
from dockyard.tasks.request.spec import BuildSpec
from tests.unit.support import make_settings

CALLS = 2000


def held_by_the_module() -> dict[str, int]:
    """The size of every container ``dockyard.tasks.client`` holds at module level (one level into its objects)."""
    sizes: dict[str, int] = {}
    for name, value in vars(client).items():
        if isinstance(value, (set, dict, list)) and not name.startswith("__"):
            sizes[name] = len(value)
        elif type(value).__module__.startswith("dockyard.") and hasattr(value, "__dict__") and not isinstance(value, type):
            for field, inner in vars(value).items():
                if isinstance(inner, (set, dict, list)):
                    sizes[f"{name}.{field}"] = len(inner)
    return sizes


def grown(before: dict[str, int]) -> dict[str, tuple[int, int]]:
    after = held_by_the_module()
    return {name: (before.get(name, 0), size) for name, size in after.items() if size > before.get(name, 0)}


@pytest.fixture
def settings() -> Settings:
    return make_settings(wait_wake_s=0.001)


@pytest.fixture
def spec(tmp_path: Path, settings: Settings) -> BuildSpec:
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    spec, packed = prepare_build({"image_name": "reg.io/team/app", "tag": "v1", "path": str(tmp_path)}, settings)
    packed.close()
    return spec


class WakingWaiter:
    """The key's waiter: every wait wakes on the key at once (another caller's build of it announced)."""

    def __init__(self, connection: Any, settings: Settings, namespace: str, cache_key: str) -> None:
        self.name = f"done:{cache_key}"

    def wait(self, block_s: float, *, also: dict[str, Any] | None = None) -> dict[str, list[Any]]:
        return {self.name: [("1-0", {})]}


class Result:
    """A task's AsyncResult: not ready for its first ``ready_after`` looks, then ready with its answer."""

    def __init__(self, task_id: str, ready_after: int | None) -> None:
        self.id = task_id
        self.looks = 0
        self.ready_after = ready_after

    def ready(self) -> bool:
        self.looks += 1
        return self.ready_after is not None and self.looks > self.ready_after

    def get(self, timeout: float | None = None) -> dict[str, Any]:
        return {"image_id": "sha256:" + "1" * 64, "task": self.id, "cache": "built"}


@pytest.fixture(autouse=True)
def no_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client, "Waiter", WakingWaiter)
    monkeypatch.setattr(client, "redis_for", lambda _settings: None)
    monkeypatch.setattr(client, "_cancelled", lambda _settings, _ids: None)  # no cancel asked


def test_builds_answered_by_their_own_result_after_a_wake_up_leave_nothing(
    spec: BuildSpec, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client, "cached_entry", lambda *_: None)
    before = held_by_the_module()
    for number in range(CALLS):
        # looked at once at the top, once when the key woke the caller: ready at the next look
        answer = client.await_build(Result(f"task-{number}", ready_after=2), spec, settings, timeout_s=5, cache_key="k")  # type: ignore[arg-type]
        assert answer["task"] == f"task-{number}"
    assert grown(before) == {}, f"kept by the client module after {CALLS} answered builds"


def test_builds_answered_from_the_cache_after_a_wake_up_leave_nothing(
    spec: BuildSpec, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    current: dict[str, str] = {}
    looks: dict[str, int] = {}

    def cached_entry(_spec: Any, _key: Any, _settings: Any) -> Entry | None:
        looks[current["id"]] = looks.get(current["id"], 0) + 1
        if looks[current["id"]] == 1:
            return None  # the first look finds nothing: the caller blocks and the key wakes it
        return Entry({"image_id": "sha256:" + "2" * 64}, "h1", time.time(), "t", current["id"])

    monkeypatch.setattr(client, "cached_entry", cached_entry)
    before = held_by_the_module()
    for number in range(CALLS):
        current["id"] = f"cached-{number}"
        answer = client.await_build(Result(current["id"], ready_after=None), spec, settings, timeout_s=5, cache_key="k")  # type: ignore[arg-type]
        assert answer["cache"] == "built"
    assert grown(before) == {}, f"kept by the client module after {CALLS} builds answered from the cache"


def test_a_build_that_times_out_leaves_nothing(spec: BuildSpec, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client, "cached_entry", lambda *_: None)
    monkeypatch.setattr(client, "RESULT_CATCH_UP_S", 0.001)
    before = held_by_the_module()
    with pytest.raises(JoinTimeout):
        client.await_build(Result("task-late", ready_after=None), spec, settings, timeout_s=0.05, cache_key="k")  # type: ignore[arg-type]
    assert grown(before) == {}


def test_a_wake_up_still_gives_the_task_a_moment_to_answer(
    spec: BuildSpec, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bookkeeping still does its job: woken with nothing in the cache, the caller waits for the
    task's own result (``_ready_within``) instead of blocking again."""
    monkeypatch.setattr(client, "cached_entry", lambda *_: None)
    caught_up: list[str] = []
    real = client._ready_within

    def ready_within(result: Any, seconds: float, **kwargs: Any) -> bool:
        caught_up.append(result.id)
        return real(result, seconds, **kwargs)

    monkeypatch.setattr(client, "_ready_within", ready_within)
    before = held_by_the_module()
    answer = client.await_build(Result("task-x", ready_after=3), spec, settings, timeout_s=5, cache_key="k")  # type: ignore[arg-type]
    assert answer["task"] == "task-x" and caught_up == ["task-x"]
    assert grown(before) == {}
