"""dockyard.tasks.cache.single_flight: an entry judged invalid is removed only if it is still the one judged (fakeredis).

``run`` reads an entry, asks ``valid`` (which may take a while: a registry
HEAD, an engine lookup), and removes it if rejected. An entry another owner
wrote meanwhile is not the one judged: it stays.
"""

from __future__ import annotations

from typing import Any

import fakeredis
import pytest

from dockyard.config.settings import Settings
from dockyard.tasks.cache.single_flight import Entry, SingleFlight, build_cache
from tests.probes import store_entry
from tests.unit.support import make_settings

KEY = "k" * 64


@pytest.fixture
def flight(fake_redis: fakeredis.FakeRedis) -> SingleFlight:
    settings: Settings = make_settings(host_id="h1", lease_s=0.5, wait_wake_s=0.01)
    return build_cache(fake_redis, settings)


def test_an_entry_written_while_the_old_one_was_judged_invalid_is_kept(flight: SingleFlight) -> None:
    store_entry(flight, KEY, {"image_id": "sha256:e1"}, token="owner-1")
    judged: list[Any] = []
    computed: list[int] = []

    def valid(entry: Entry) -> bool:
        judged.append(entry.value)
        if entry.value == {"image_id": "sha256:e1"}:  # while E1 is judged, another owner stores E2
            store_entry(flight, KEY, {"image_id": "sha256:e2"}, host="h2", token="owner-2")
            return False
        return True

    def compute() -> dict[str, str]:
        computed.append(1)
        return {"image_id": "sha256:mine"}

    outcome = flight.run(KEY, compute, valid=valid)
    kept = flight.peek(KEY)
    assert kept is not None and (kept.value, kept.token) == ({"image_id": "sha256:e2"}, "owner-2"), "E2, written while E1 was judged, was removed with it"
    assert (outcome.source, outcome.value) == ("hit", {"image_id": "sha256:e2"}), "the fresh entry answers"
    assert computed == [] and judged == [{"image_id": "sha256:e1"}, {"image_id": "sha256:e2"}]


def test_an_entry_written_meanwhile_and_invalid_too_is_removed_as_judged(flight: SingleFlight) -> None:
    store_entry(flight, KEY, {"image_id": "sha256:e1"}, token="owner-1")
    judged: list[Any] = []

    def valid(entry: Entry) -> bool:
        judged.append(entry.value["image_id"])
        if entry.value["image_id"] == "sha256:e1":
            store_entry(flight, KEY, {"image_id": "sha256:e2"}, token="owner-2")
        return False  # E2 is judged too, and rejected: then it goes

    outcome = flight.run(KEY, lambda: {"image_id": "sha256:mine"}, valid=valid)
    assert judged == ["sha256:e1", "sha256:e2"]
    assert (outcome.source, outcome.value) == ("built", {"image_id": "sha256:mine"})


def test_an_invalid_entry_unchanged_is_removed_and_computed_again(flight: SingleFlight) -> None:
    store_entry(flight, KEY, {"image_id": "sha256:e1"}, token="owner-1")
    outcome = flight.run(KEY, lambda: {"image_id": "sha256:mine"}, valid=lambda entry: False)
    assert (outcome.source, outcome.value) == ("built", {"image_id": "sha256:mine"})
    stored = flight.peek(KEY)
    assert stored is not None and stored.value == {"image_id": "sha256:mine"}


def test_an_entry_that_expired_while_judged_is_not_an_error(flight: SingleFlight) -> None:
    store_entry(flight, KEY, {"image_id": "sha256:e1"}, token="owner-1")

    def valid(entry: Entry) -> bool:
        flight.connection.delete(flight.entry_key(KEY))
        return False

    outcome = flight.run(KEY, lambda: {"image_id": "sha256:mine"}, valid=valid)
    assert outcome.source == "built"
