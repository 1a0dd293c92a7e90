"""Key, lease and join logic of the distributed cache (fakeredis: no integration here)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest

from config.settings import Settings
from tasks import cache as cache_module
from tasks.cache import SingleFlight, cacheable
from tasks.cache_key import build_key, call_key, push_key
from tasks.errors import BuildError, InvalidInput
from tasks.lease import KeepAlive, Lease


@pytest.fixture
def connection() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


@pytest.fixture
def settings() -> Settings:
    return Settings(key_prefix="unit:", lease_s=0.5, join_poll_s=0.01, host_id="h1")


def test_call_key_ignores_credentials_and_ignore_cache() -> None:
    base = call_key("op", [], {"image_name": "a", "tag": "1"})
    assert call_key("op", [], {"tag": "1", "image_name": "a", "credentials": {"password": "x"}, "ignore_cache": True}) == base
    assert call_key("op", [], {"image_name": "a", "tag": "2"}) != base


def test_build_key_covers_content_and_options_but_not_logging() -> None:
    args: dict[str, Any] = {"context_digest": "c", "dockerfile_digest": "d", "build_backend": "docker-py", "build_kwargs": {}}
    base = build_key(**args)
    assert build_key(**{**args, "context_digest": "c2"}) != base
    assert build_key(**{**args, "dockerfile_digest": "d2"}) != base
    assert build_key(**{**args, "build_backend": "buildx"}) != base
    assert build_key(**{**args, "build_kwargs": {"buildargs": {"A": "1"}}}) != base
    assert build_key(**{**args, "build_kwargs": {"target": "t"}}) != base
    assert build_key(**{**args, "build_kwargs": {"quiet": True, "rm": False, "path": "/x"}}) == base


def test_push_key_covers_image_repository_tags_registry() -> None:
    base = push_key(image_id="i", repository="r", tags=["a"], registry="g")
    assert len({base, push_key(image_id="j", repository="r", tags=["a"], registry="g"),
                push_key(image_id="i", repository="s", tags=["a"], registry="g"),
                push_key(image_id="i", repository="r", tags=["b"], registry="g"),
                push_key(image_id="i", repository="r", tags=["a"], registry="h")}) == 5


def test_non_json_arguments_are_refused() -> None:
    with pytest.raises(InvalidInput, match="JSON-serialisable"):
        call_key("op", [], {"when": object()})


def test_lease_has_one_owner_and_only_the_owner_releases(connection: fakeredis.FakeRedis) -> None:
    first, second = Lease(connection, "L", lease_s=5), Lease(connection, "L", lease_s=5)
    assert first.acquire() and not second.acquire()
    assert not second.release() and connection.exists("L")
    assert not second.renew()
    assert first.renew() and first.release()
    assert not connection.exists("L") and second.acquire()


def test_keepalive_renews_past_the_lease_duration(connection: fakeredis.FakeRedis) -> None:
    lease = Lease(connection, "K", lease_s=0.3)
    assert lease.acquire()
    with KeepAlive(lease) as keep:
        time.sleep(0.8)
        assert connection.exists("K") and not keep.lost.is_set()
    lease.release()


def test_a_hit_does_not_compute(connection: fakeredis.FakeRedis, settings: Settings) -> None:
    flight = SingleFlight(connection, settings)
    assert flight.run("k", lambda: {"n": 1}).source == "built"
    outcome = flight.run("k", lambda: pytest.fail("computed on a hit"))
    assert outcome.source == "hit" and outcome.value == {"n": 1}
    assert not connection.exists("unit:lease:k"), "no lease left behind"


def test_concurrent_callers_compute_once_and_join(connection: fakeredis.FakeRedis, settings: Settings) -> None:
    calls: list[int] = []
    barrier = threading.Barrier(8)

    def compute() -> dict[str, int]:
        calls.append(1)
        time.sleep(0.3)
        return {"image_id": 7}

    results: list[Any] = []

    def caller() -> None:
        barrier.wait()
        results.append(SingleFlight(connection, settings).run("same", compute))

    threads = [threading.Thread(target=caller) for _ in range(8)]
    for each in threads:
        each.start()
    for each in threads:
        each.join()
    assert len(calls) == 1
    assert sorted(outcome.source for outcome in results) == ["built"] + ["joined"] * 7
    assert {outcome.value["image_id"] for outcome in results} == {7}


def test_a_dead_owners_lease_expires_and_a_waiter_takes_over(connection: fakeredis.FakeRedis, settings: Settings) -> None:
    dead = Lease(connection, "unit:lease:orphan", lease_s=settings.lease_s)
    assert dead.acquire()  # the owner "dies": never renews, never stores, never releases
    started = time.monotonic()
    outcome = SingleFlight(connection, settings).run("orphan", lambda: {"by": "waiter"})
    assert outcome.source == "built" and outcome.value == {"by": "waiter"}
    assert time.monotonic() - started >= settings.lease_s * 0.8
    assert not connection.exists("unit:lease:orphan")


def test_only_successes_are_stored_and_joiners_learn_of_the_failure(connection: fakeredis.FakeRedis, settings: Settings) -> None:
    flight = SingleFlight(connection, settings)
    started = threading.Event()
    joiner_error: list[BaseException] = []

    def failing() -> dict[str, Any]:
        started.set()
        time.sleep(0.2)
        raise BuildError("RUN false returned a non-zero code")

    def join() -> None:
        started.wait()
        try:
            flight.run("bad", lambda: pytest.fail("joiner must not build"))
        except BuildError as exc:
            joiner_error.append(exc)

    joiner = threading.Thread(target=join)
    joiner.start()
    with pytest.raises(BuildError):
        flight.run("bad", failing)
    joiner.join()
    assert flight.peek("bad") is None
    assert joiner_error and "non-zero code" in str(joiner_error[0])
    assert not connection.exists("unit:lease:bad")


def test_ignore_cache_recomputes_and_stores(connection: fakeredis.FakeRedis, settings: Settings) -> None:
    flight = SingleFlight(connection, settings)
    flight.run("k", lambda: {"v": 1})
    assert flight.run("k", lambda: {"v": 2}, ignore_cache=True).source == "built"
    assert flight.run("k", lambda: {"v": 3}).value == {"v": 2}


def test_an_invalid_entry_is_a_miss_and_is_replaced(connection: fakeredis.FakeRedis, settings: Settings) -> None:
    flight = SingleFlight(connection, settings)
    flight.run("k", lambda: {"image_id": "gone"})
    outcome = flight.run("k", lambda: {"image_id": "new"}, valid=lambda entry: entry.value["image_id"] != "gone")
    assert outcome.source == "built" and flight.peek("k").value == {"image_id": "new"}  # type: ignore[union-attr]


@pytest.fixture
def fake_store(monkeypatch: pytest.MonkeyPatch, connection: fakeredis.FakeRedis, settings: Settings) -> Iterator[fakeredis.FakeRedis]:
    monkeypatch.setattr(cache_module, "redis_for", lambda _settings: connection)
    monkeypatch.setattr(cache_module, "get_settings", lambda: settings)
    yield connection


def test_cacheable_keeps_the_reference_interface(fake_store: fakeredis.FakeRedis) -> None:
    calls: list[tuple[str, str]] = []

    @cacheable
    def step(image_name: str, tag: str = "x", credentials: dict[str, str] | None = None, ignore_cache: bool = False) -> dict[str, str]:
        calls.append((image_name, tag))
        return {"image": f"{image_name}:{tag}"}

    assert step("a", tag="1", credentials={"password": "p1"}) == {"image": "a:1"}
    assert step("a", tag="1", credentials={"password": "p2"}) == {"image": "a:1"}
    assert step("a", tag="2") == {"image": "a:2"}
    assert step("a", tag="1", ignore_cache=True) == {"image": "a:1"}
    assert calls == [("a", "1"), ("a", "2"), ("a", "1")]
    assert step.__name__ == "step"
    assert not any(b"p1" in fake_store.get(name) or b"p2" in fake_store.get(name) for name in fake_store.keys("unit:cache:*"))
