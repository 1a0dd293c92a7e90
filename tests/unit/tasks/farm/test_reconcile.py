"""dockyard.tasks.farm.reconcile: at start, the records of images the engine lost are dropped, the others kept (fakeredis)."""

from __future__ import annotations

import docker.errors
import fakeredis
import pytest

from dockyard.config.settings import Settings
from dockyard.tasks.farm import hosts
from dockyard.tasks.cache.single_flight import build_cache
from dockyard.tasks.farm.reconcile import Reconciled, reconcile
from tests.unit.fakes import FakeEngine
from tests.probes import store_entry

KEPT, GONE = f"sha256:{1:064x}", f"sha256:{2:064x}"


def record_built(
    connection: fakeredis.FakeRedis, settings: Settings, engine: FakeEngine, image_id: str, name: str,
    *, host_id: str = "h1",
) -> str:
    """An image on ``engine`` with its cache entry and its location recorded as a worker records them; its entry key."""
    engine.image_ids.add(image_id)
    engine.refs[f"{name}:v1"] = image_id
    cache = build_cache(connection, settings)
    store_entry(cache, f"key-{name}-{host_id}", {"image_id": image_id}, host=host_id)
    entry_key = cache.entry_key(f"key-{name}-{host_id}")
    hosts.record_image(
        connection, settings, host_id=host_id, image_id=image_id, references=[f"{name}:v1"], cache_keys=[entry_key]
    )
    return entry_key


def test_only_the_records_of_the_image_missing_from_the_engine_are_dropped(
    fake_redis: fakeredis.FakeRedis, unit_settings: Settings, engine: FakeEngine
) -> None:
    kept_entry = record_built(fake_redis, unit_settings, engine, KEPT, "team/kept")
    gone_entry = record_built(fake_redis, unit_settings, engine, GONE, "team/gone")
    engine.delete(GONE)  # pruned while the worker was down: no event seen

    found = reconcile(fake_redis, unit_settings, engine, "h1")  # type: ignore[arg-type]

    assert found == Reconciled(checked=2, gone=(GONE,), dropped=3)  # the entry, the location, the index
    assert not fake_redis.exists(gone_entry)
    assert hosts.locate_images(fake_redis, unit_settings, ["team/gone:v1", "team/kept:v1"]) == [
        None, {"host": "h1", "image_id": KEPT},
    ]
    assert fake_redis.exists(kept_entry)
    assert hosts.recorded_images(fake_redis, unit_settings, "h1") == [KEPT]


def test_another_hosts_records_are_left_alone(
    fake_redis: fakeredis.FakeRedis, unit_settings: Settings, engine: FakeEngine
) -> None:
    other = FakeEngine()
    for host_id in ("h2", "h1:x"):  # "h1:x" shares the index prefix of "h1"
        record_built(fake_redis, unit_settings, other, GONE, f"team/{host_id}", host_id=host_id)

    assert reconcile(fake_redis, unit_settings, engine, "h1") == Reconciled(0, (), 0)  # type: ignore[arg-type]
    assert hosts.recorded_images(fake_redis, unit_settings, "h2") == [GONE]
    assert hosts.recorded_images(fake_redis, unit_settings, "h1:x") == [GONE]


def test_an_engine_that_fails_stops_the_reconciliation(
    fake_redis: fakeredis.FakeRedis, unit_settings: Settings, engine: FakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    record_built(fake_redis, unit_settings, engine, KEPT, "team/kept")

    def down(name: str) -> None:
        raise docker.errors.APIError("engine down")

    monkeypatch.setattr(engine.images, "get", down)
    with pytest.raises(docker.errors.APIError):
        reconcile(fake_redis, unit_settings, engine, "h1")  # type: ignore[arg-type]
    assert hosts.recorded_images(fake_redis, unit_settings, "h1") == [KEPT], "nothing dropped on an engine error"
