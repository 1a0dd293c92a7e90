"""dockyard.tasks.cache.single_flight: SingleFlight (run, peek, join, entries, invalidate), the build and push caches, ``cacheable``.

On fakeredis. The thread tests (moved from an earlier farm test) go step by
step on events (``Watch``: who waits on a key's wake-ups, who saw a lease let go),
never on sleeps; the others step the clock or the poll loop by hand.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import fakeredis
import pytest

from dockyard.config.settings import Settings
from dockyard.tasks.cache import single_flight as cache_module
from dockyard.tasks.cache.single_flight import Entry, SingleFlight, build_cache, cacheable, push_cache
from dockyard.tasks.errors import BuildError, EngineUnavailable, JoinTimeout
from dockyard.tasks.cache.lease import Lease
from dockyard.tasks.cache.notify import Waiter, done_key
from dockyard.tasks.cache.single_flight import FAILURE_NOTICE_S
from tests.unit.support import Clock, make_settings
from tests.probes import lease_held, store_entry


@pytest.fixture
def settings() -> Settings:
    return make_settings(lease_s=0.5, wait_wake_s=0.01)


@pytest.fixture
def flight(fake_redis: fakeredis.FakeRedis, settings: Settings) -> SingleFlight:
    return SingleFlight(fake_redis, settings, namespace="build")


def on_poll(monkeypatch: pytest.MonkeyPatch, *steps: Callable[[], None]) -> list[float]:
    """Replace the waiter's blocking read: each wait runs the next step (then nothing); returns the waits."""
    slept: list[float] = []
    pending = list(steps)

    def wait(self: Waiter, block_s: float, *, also: object = None) -> dict[str, list[tuple[object, object]]]:
        slept.append(block_s)
        if pending:
            pending.pop(0)()
        return {}

    monkeypatch.setattr(Waiter, "wait", wait)
    return slept


WAIT_S = 30.0  # a deadline for what must happen, not a delay: generous for a loaded machine


class Watch:
    """Which threads wait on a key's wake-ups (``Waiter.wait``) and saw a lease free (``held_by_anyone``)."""

    def __init__(self) -> None:
        self.waits: Counter[int] = Counter()  # by thread
        self.saw_free: set[int] = set()
        self.changed = threading.Condition()

    def until(self, done: Callable[[], bool]) -> bool:
        with self.changed:
            return self.changed.wait_for(done, WAIT_S)

    def waiting_threads(self) -> int:
        return len(self.waits)


@pytest.fixture
def watch(monkeypatch: pytest.MonkeyPatch) -> Watch:
    seen = Watch()
    real_wait, real_held = Waiter.wait, Lease.held_by_anyone

    def wait(self: Waiter, block_s: float, **kwargs: Any) -> dict[str, list[tuple[object, object]]]:
        with seen.changed:
            seen.waits[threading.get_ident()] += 1
            seen.changed.notify_all()
        return real_wait(self, block_s, **kwargs)

    def held_by_anyone(self: Lease) -> bool:
        held = real_held(self)
        if not held:
            with seen.changed:
                seen.saw_free.add(threading.get_ident())
                seen.changed.notify_all()
        return held

    monkeypatch.setattr(Waiter, "wait", wait)
    monkeypatch.setattr(Lease, "held_by_anyone", held_by_anyone)
    return seen


def held_by_another_owner(connection: fakeredis.FakeRedis, cache_key: str, lease_s: float = 60) -> Lease:
    owner = Lease(connection, f"unit:lease:{cache_key}", lease_s=lease_s)
    assert owner.acquire()
    return owner


def announce(connection: fakeredis.FakeRedis, cache_key: str, token: str, message: str = "RUN false failed") -> None:
    notice = {"type": "BuildError", "message": message, "token": token}
    connection.set(f"unit:failed:{cache_key}", json.dumps(notice))


# entries: store, peek, entries, invalidate


def test_entry_round_trips_and_reads_old_entries() -> None:
    entry = Entry({"image_id": "sha256:a"}, "h2", 12.5, "tok", "task-1")
    assert Entry.from_json(entry.to_json()) == entry
    old = json.dumps({"value": 1, "host": "h1", "created_at": 1.0})
    assert Entry.from_json(old) == Entry(1, "h1", 1.0, "", None)


def test_a_stored_entry_expires_after_cache_ttl(fake_redis: fakeredis.FakeRedis, clock: Clock) -> None:
    flight = SingleFlight(fake_redis, make_settings(cache_ttl_s=600))
    flight.run("k", lambda: {"n": 1})
    assert fake_redis.ttl("unit:team:default:call:k") == 600
    clock.advance(599)
    assert flight.peek("k") is not None
    clock.advance(2)
    assert flight.peek("k") is None
    assert flight.run("k", lambda: {"n": 2}).source == "built"


def test_store_records_host_time_token_and_owner(flight: SingleFlight, clock: Clock) -> None:
    entry = store_entry(flight, "k", {"v": 1}, token="t", owner="task-9")
    assert entry == Entry({"v": 1}, "h1", clock.now, "t", "task-9")
    assert flight.peek("k") == entry
    assert store_entry(flight, "k", {"v": 2}, host="h2").host == "h2"


def test_peek_of_nothing_is_none(flight: SingleFlight) -> None:
    assert flight.peek("absent") is None


def test_the_caches_have_their_own_namespaces(fake_redis: fakeredis.FakeRedis, settings: Settings) -> None:
    builds, pushes = build_cache(fake_redis, settings), push_cache(fake_redis, settings)
    assert builds.entry_key("k") == "unit:build:k" and pushes.entry_key("k") == "unit:team:default:push:k"
    store_entry(builds, "k", {"image_id": "i"})
    calls = SingleFlight(fake_redis, settings)
    assert pushes.peek("k") is None and calls.peek("k") is None
    assert calls.lease("k").name == "unit:team:default:call:lease:k" and builds.lease("k").name == "unit:lease:k"


def test_a_teams_push_and_call_caches_are_its_own_and_the_build_cache_is_shared(
    fake_redis: fakeredis.FakeRedis, settings: Settings
) -> None:
    theirs = settings.model_copy(update={"team": "team-b"})
    for make in (push_cache, SingleFlight):
        store_entry(make(fake_redis, settings), "k", {"v": 1})
        assert make(fake_redis, theirs).peek("k") is None, "another team sees none of it"
        assert list(make(fake_redis, theirs).entries()) == [] and make(fake_redis, theirs).clear() == 0
        assert make(fake_redis, settings).peek("k") is not None
    assert push_cache(fake_redis, theirs).entry_key("k") == "unit:team:team-b:push:k"
    assert push_cache(fake_redis, theirs).lease("k").name == "unit:team:team-b:push:lease:k"
    store_entry(build_cache(fake_redis, settings), "k", {"image_id": "i"})
    assert build_cache(fake_redis, theirs).peek("k") is not None and build_cache(fake_redis, theirs).entry_key("k") == "unit:build:k"
    assert done_key(theirs, "build", "k") == "unit:done:build:k"
    assert done_key(theirs, "push", "k") == "unit:team:team-b:done:push:k" and done_key(theirs, "call", "k") == "unit:team:team-b:done:call:k"


def test_entries_lists_this_namespace_only(fake_redis: fakeredis.FakeRedis, settings: Settings) -> None:
    builds = build_cache(fake_redis, settings)
    store_entry(builds, "a", {"image_id": "1"})
    store_entry(builds, "b", {"image_id": "2"})
    store_entry(push_cache(fake_redis, settings), "c", {"digest": "d"})
    fake_redis.set("unit:lease:a", "token")
    found = dict(builds.entries())
    assert set(found) == {"a", "b"}
    assert found["b"].value == {"image_id": "2"}


def test_invalidate_removes_and_counts(flight: SingleFlight) -> None:
    store_entry(flight, "a", 1)
    store_entry(flight, "b", 2)
    assert flight.invalidate() == 0
    assert flight.invalidate("a", "missing") == 1
    assert flight.peek("a") is None and flight.peek("b") is not None


# run: hit, miss, owner, failures


def test_a_hit_does_not_compute(fake_redis: fakeredis.FakeRedis, flight: SingleFlight) -> None:
    assert flight.run("k", lambda: {"n": 1}).source == "built"
    outcome = flight.run("k", lambda: pytest.fail("computed on a hit"))
    assert outcome.source == "hit" and outcome.value == {"n": 1}
    assert not fake_redis.exists("unit:lease:k"), "no lease left behind"


def test_the_owner_stores_its_lease_token_and_task(flight: SingleFlight) -> None:
    outcome = flight.run("k", lambda: {"n": 1}, host="h7", owner="task-1")
    assert outcome.entry.token and outcome.entry.owner == "task-1" and outcome.entry.host == "h7"
    assert flight.peek("k") == outcome.entry
    assert not outcome.took_over


def test_concurrent_callers_compute_once_and_join(fake_redis: fakeredis.FakeRedis, settings: Settings, watch: Watch) -> None:
    calls: list[int] = []
    barrier = threading.Barrier(8)

    def compute() -> dict[str, int]:
        calls.append(1)
        # the owner answers only once the seven others wait for it
        assert watch.until(lambda: watch.waiting_threads() >= 7), f"7 joiners wait, not {watch.waiting_threads()}"
        return {"image_id": 7}

    results: list[Any] = []

    def caller() -> None:
        barrier.wait()
        results.append(SingleFlight(fake_redis, settings, namespace="build").run("same", compute))

    threads = [threading.Thread(target=caller) for _ in range(8)]
    for each in threads:
        each.start()
    for each in threads:
        each.join(WAIT_S)
    assert len(calls) == 1
    assert sorted(outcome.source for outcome in results) == ["built"] + ["joined"] * 7
    assert {outcome.value["image_id"] for outcome in results} == {7}


def test_a_dead_owners_lease_expires_and_a_waiter_takes_over(fake_redis: fakeredis.FakeRedis, settings: Settings) -> None:
    held_by_another_owner(fake_redis, "orphan", lease_s=settings.lease_s)  # never renews, stores nor releases
    started = time.monotonic()
    outcome = SingleFlight(fake_redis, settings, namespace="build").run("orphan", lambda: {"by": "waiter"})
    assert outcome.source == "built" and outcome.value == {"by": "waiter"} and outcome.took_over
    assert time.monotonic() - started >= settings.lease_s * 0.8
    assert not fake_redis.exists("unit:lease:orphan")


class Retried(Exception):
    """What a Celery task's retry raises, in miniature."""


def test_a_takeover_after_waiting_hands_back_for_a_fresh_time_budget(fake_redis: fakeredis.FakeRedis, settings: Settings) -> None:
    held_by_another_owner(fake_redis, "orphan", lease_s=settings.lease_s)
    computed: list[str] = []

    def retry() -> None:
        raise Retried()

    with pytest.raises(Retried):
        SingleFlight(fake_redis, settings, namespace="build").run(
            "orphan", lambda: computed.append("late") or {}, on_takeover=retry
        )
    assert computed == [], "nothing is computed within the waiting task's time limit"
    assert not fake_redis.exists("unit:lease:orphan"), "the lease is left for the new delivery to take"
    outcome = SingleFlight(fake_redis, settings, namespace="build").run("orphan", lambda: {"by": "fresh"}, on_takeover=retry)
    assert outcome.source == "built" and not outcome.took_over, "the new delivery takes the free lease at once"


def test_only_successes_are_stored_and_joiners_learn_of_the_failure(
    fake_redis: fakeredis.FakeRedis, settings: Settings, watch: Watch
) -> None:
    # the joiner wakes on the owner's events only: no poll tick between the failure notice and the release
    flight = SingleFlight(fake_redis, make_settings(lease_s=0.5, wait_wake_s=WAIT_S), namespace="build")
    started = threading.Event()
    joiner_error: list[BaseException] = []

    def failing() -> dict[str, Any]:
        started.set()
        assert watch.until(lambda: watch.waiting_threads() >= 1), "the joiner waits for this owner"
        raise BuildError("RUN false returned a non-zero code")

    def join() -> None:
        assert started.wait(WAIT_S)
        try:
            flight.run("bad", lambda: pytest.fail("joiner must not build"))
        except BuildError as exc:
            joiner_error.append(exc)

    joiner = threading.Thread(target=join)
    joiner.start()
    with pytest.raises(BuildError):
        flight.run("bad", failing)
    joiner.join(WAIT_S)
    assert not joiner.is_alive()
    assert flight.peek("bad") is None
    assert joiner_error and "non-zero code" in str(joiner_error[0])
    assert not fake_redis.exists("unit:lease:bad")


def test_a_failure_notice_names_the_owners_lease_and_expires(fake_redis: fakeredis.FakeRedis, flight: SingleFlight) -> None:
    with pytest.raises(BuildError):
        flight.run("bad", lambda: (_ for _ in ()).throw(BuildError("boom")))
    notice = json.loads(fake_redis.get("unit:failed:bad"))
    assert notice["type"] == "BuildError" and notice["message"] == "boom" and len(notice["token"]) == 32
    assert 0 < fake_redis.ttl("unit:failed:bad") <= FAILURE_NOTICE_S


def test_a_transient_failure_is_not_announced(fake_redis: fakeredis.FakeRedis, flight: SingleFlight) -> None:
    with pytest.raises(EngineUnavailable):
        flight.run("k", lambda: (_ for _ in ()).throw(EngineUnavailable("engine down")))
    assert not fake_redis.exists("unit:failed:k"), "joiners take over a retried build instead of failing"
    assert not fake_redis.exists("unit:lease:k")


def test_ignore_cache_recomputes_and_stores(flight: SingleFlight) -> None:
    flight.run("k", lambda: {"v": 1})
    assert flight.run("k", lambda: {"v": 2}, ignore_cache=True).source == "built"
    assert flight.run("k", lambda: {"v": 3}).value == {"v": 2}


def test_an_invalid_entry_is_a_miss_and_is_replaced(flight: SingleFlight) -> None:
    flight.run("k", lambda: {"image_id": "gone"})
    outcome = flight.run("k", lambda: {"image_id": "new"}, valid=lambda entry: entry.value["image_id"] != "gone")
    assert outcome.source == "built" and flight.peek("k").value == {"image_id": "new"}  # type: ignore[union-attr]


# joining a running owner (poll loop stepped by hand)


def test_a_joiner_takes_the_running_owners_value(
    fake_redis: fakeredis.FakeRedis, flight: SingleFlight, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner = held_by_another_owner(fake_redis, "k")

    def finish() -> None:
        store_entry(flight, "k", {"image_id": "theirs"}, host="h2", token=owner.token)
        owner.release()

    on_poll(monkeypatch, finish)
    outcome = flight.run("k", lambda: pytest.fail("a joiner must not compute"))
    assert (outcome.source, outcome.value, outcome.entry.host) == ("joined", {"image_id": "theirs"}, "h2")


def test_a_joiner_raises_the_failure_of_the_build_it_joined(
    fake_redis: fakeredis.FakeRedis, flight: SingleFlight, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner = held_by_another_owner(fake_redis, "k")
    on_poll(monkeypatch, lambda: announce(fake_redis, "k", owner.token, "RUN false failed"))
    with pytest.raises(BuildError, match="joined failed: BuildError: RUN false failed"):
        flight.run("k", lambda: pytest.fail("a joiner must not compute"))


def test_a_joiner_ignores_the_failure_notice_of_an_earlier_build(
    fake_redis: fakeredis.FakeRedis, flight: SingleFlight, monkeypatch: pytest.MonkeyPatch
) -> None:
    announce(fake_redis, "k", token="an-earlier-owner", message="stale failure")
    owner = held_by_another_owner(fake_redis, "k")

    def finish() -> None:
        store_entry(flight, "k", {"image_id": "fresh"}, token=owner.token)
        owner.release()

    on_poll(monkeypatch, lambda: None, finish)
    outcome = flight.run("k", lambda: pytest.fail("a joiner must not compute"))
    assert (outcome.source, outcome.value) == ("joined", {"image_id": "fresh"})


def test_a_joiner_ignores_an_entry_of_an_earlier_build(
    fake_redis: fakeredis.FakeRedis, flight: SingleFlight, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner = held_by_another_owner(fake_redis, "k")

    def stale_entry_appears() -> None:
        store_entry(flight, "k", {"image_id": "stale"}, token="an-earlier-owner")

    def finish() -> None:
        store_entry(flight, "k", {"image_id": "fresh"}, token=owner.token)
        owner.release()

    on_poll(monkeypatch, stale_entry_appears, finish)
    assert flight.run("k", lambda: pytest.fail("joiner computed"), ignore_cache=True).value == {"image_id": "fresh"}


def test_a_joiner_times_out_when_the_owner_neither_finishes_nor_dies(
    fake_redis: fakeredis.FakeRedis, flight: SingleFlight, monkeypatch: pytest.MonkeyPatch
) -> None:
    held_by_another_owner(fake_redis, "k")
    ticks = iter(range(0, 10_000, 10))
    monkeypatch.setattr(cache_module.time, "monotonic", lambda: float(next(ticks)))
    on_poll(monkeypatch)
    with pytest.raises(JoinTimeout):
        flight.run("k", lambda: pytest.fail("a joiner must not compute"))


# peek, running and join: the caller's reads


def test_running_tells_whether_a_lease_is_held(fake_redis: fakeredis.FakeRedis, flight: SingleFlight) -> None:
    assert not lease_held(flight, "k")
    owner = held_by_another_owner(fake_redis, "k")
    assert lease_held(flight, "k")
    owner.release()
    assert not lease_held(flight, "k")


def test_join_without_a_running_build_answers_at_once(flight: SingleFlight, monkeypatch: pytest.MonkeyPatch) -> None:
    slept = on_poll(monkeypatch)
    assert flight.join("k") is None
    store_entry(flight, "k", {"image_id": "i"})
    assert flight.join("k") == flight.peek("k")
    assert flight.join("k", accept=lambda entry: False) is None
    assert slept == []


def test_join_waits_for_the_running_builds_entry(
    fake_redis: fakeredis.FakeRedis, flight: SingleFlight, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner = held_by_another_owner(fake_redis, "k")
    store_entry(flight, "k", {"image_id": "old"}, token="earlier")
    slept = on_poll(monkeypatch, lambda: None, lambda: store_entry(flight, "k", {"image_id": "new"}, token=owner.token))
    entry = flight.join("k", accept=lambda found: found.value["image_id"] == "new")
    assert entry is not None and entry.value == {"image_id": "new"}
    assert slept == [0.01, 0.01], "blocked on the key's wake-ups, never polling"


def test_join_gives_none_when_the_run_ends_without_an_acceptable_entry(
    fake_redis: fakeredis.FakeRedis, flight: SingleFlight, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner = held_by_another_owner(fake_redis, "k")
    on_poll(monkeypatch, lambda: owner.release())
    assert flight.join("k") is None


def test_join_waits_for_the_holder_to_answer_after_the_owner_lets_go(
    fake_redis: fakeredis.FakeRedis, flight: SingleFlight, watch: Watch, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The owner stores its entry and releases its lease before the holder records the tags and
    announces ``answered``: a joiner takes the entry once it is answered, not a miss in between."""
    from dockyard.tasks.cache.notify import announce as wake

    monkeypatch.setattr(cache_module, "ANSWER_SETTLE_S", WAIT_S)  # a loaded machine's holder answers late, not never
    owner = held_by_another_owner(fake_redis, "k")
    store_entry(flight, "k", {"image_id": "new"}, token=owner.token)
    answered = threading.Event()
    steps: list[str] = []
    joiner = threading.get_ident()

    def holder() -> None:
        try:
            if watch.until(lambda: watch.waits[joiner] >= 1):  # the joiner waits while the lease is held
                steps.append("joined")
            owner.release()
            if watch.until(lambda: joiner in watch.saw_free):  # the joiner saw the owner let go
                steps.append("saw the release")
        finally:
            answered.set()
            wake(fake_redis, flight.settings, flight.namespace, "k", "answered")

    helper = threading.Thread(target=holder)
    helper.start()
    entry = flight.join("k", accept=lambda found: answered.is_set())
    helper.join(WAIT_S)
    assert steps == ["joined", "saw the release"], "the joiner waited past the release for the answer"
    assert entry is not None and entry.value == {"image_id": "new"}


# cacheable


@pytest.fixture
def fake_store(monkeypatch: pytest.MonkeyPatch, fake_redis: fakeredis.FakeRedis, settings: Settings) -> Iterator[fakeredis.FakeRedis]:
    monkeypatch.setattr(cache_module, "redis_for", lambda _settings: fake_redis)
    monkeypatch.setattr(cache_module, "get_settings", lambda: settings)
    yield fake_redis


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
    stored = [fake_store.get(name) for name in fake_store.keys("unit:team:default:call:*")]
    assert len(stored) == 2 and not any(b"p1" in raw or b"p2" in raw for raw in stored)


def test_cacheable_keys_positional_and_keyword_calls_alike(fake_store: fakeredis.FakeRedis) -> None:
    calls: list[str] = []

    @cacheable
    def step(image_name: str, tag: str = "x") -> str:
        calls.append(image_name)
        return image_name

    assert step("a", "1") == step("a", tag="1") == step(image_name="a", tag="1") == "a"
    assert calls == ["a"]


def test_cacheable_does_not_store_a_failure(fake_store: fakeredis.FakeRedis) -> None:
    attempts: list[int] = []

    @cacheable
    def step(name: str) -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise BuildError("first try fails")
        return name

    with pytest.raises(BuildError):
        step("a")
    assert step("a") == "a" and len(attempts) == 2


# fencing


def test_an_owner_that_lost_its_lease_does_not_overwrite_the_winner(
    fake_redis: fakeredis.FakeRedis, settings: Settings
) -> None:
    """The lease vanishes mid-build (a Redis flush, a failover); another owner stores first; the late one joins it."""
    first, second = SingleFlight(fake_redis, settings, namespace="build"), SingleFlight(fake_redis, settings, namespace="build")

    def slow_first() -> dict[str, str]:
        fake_redis.delete("unit:lease:k")  # the first owner's lease is gone
        outcome = second.run("k", lambda: {"image_id": "B"})
        assert outcome.source == "built"
        return {"image_id": "A"}

    late = first.run("k", slow_first)
    assert late.source == "joined" and late.value == {"image_id": "B"}
    assert first.peek("k").value == {"image_id": "B"}, "the winner's entry stays"  # type: ignore[union-attr]
    assert not fake_redis.exists("unit:lease:k")


def test_an_owner_that_lost_its_lease_with_no_winner_stores_under_a_new_lease(
    fake_redis: fakeredis.FakeRedis, settings: Settings
) -> None:
    flight = SingleFlight(fake_redis, settings, namespace="build")

    def lose_the_lease() -> dict[str, str]:
        fake_redis.flushdb()
        return {"image_id": "A"}

    outcome = flight.run("k", lose_the_lease)
    assert outcome.source == "built" and flight.peek("k").value == {"image_id": "A"}  # type: ignore[union-attr]
    assert not fake_redis.exists("unit:lease:k")


def test_a_joiner_of_an_owner_whose_context_was_missing_gets_context_missing() -> None:
    """Its caller then uploads the context again and resends (dockyard.tasks.client), like the owner's caller."""
    from dockyard.tasks.cache.single_flight import joined_failure
    from dockyard.tasks.errors import BuildError, ContextMissing

    missing = joined_failure({"type": "ContextMissing", "message": "Build context x is not in the store", "token": "t"})
    assert type(missing) is ContextMissing and "Build context x is not in the store" in str(missing)
    other = joined_failure({"type": "BuildError", "message": "failing RUN", "token": "t"})
    assert type(other) is BuildError and str(other) == "The build this call joined failed: BuildError: failing RUN"


def test_behind_sentinel_the_lease_and_the_entry_reach_a_replica_before_the_owner_goes_on() -> None:
    waits: list[int] = []

    class Replicated(fakeredis.FakeRedis):
        def wait(self, num_replicas: int, timeout: int, **_: object) -> int:
            waits.append(num_replicas)
            return num_replicas

    sentinel = make_settings(redis_url="sentinel://u:p@127.0.0.1:26395/13;sentinel://127.0.0.1:26396")
    flight = SingleFlight(Replicated(server=fakeredis.FakeServer()), sentinel, namespace="build")
    assert flight.run("k", lambda: {"image_id": "sha256:1"}).source == "built"
    assert waits == [1, 1]  # once the lease is taken, once the entry is written
    assert flight.run("k", lambda: {"image_id": "sha256:2"}).source == "hit" and waits == [1, 1]
