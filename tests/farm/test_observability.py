"""Metrics a scraper reads from a worker, and task events as Flower receives them."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import redis
import requests
from prometheus_client.parser import text_string_to_metric_families

from dockyard.config.settings import Settings, fast_queue, host_queue
from dockyard.tasks import client
from dockyard.tasks.farm.hosts import live_hosts
from tests.farm.farm_helpers import team_host_queue
from tests.farm.conftest import WorkerProcess, operator_app
from tests.farm.farm_helpers import slow_context

TIMEOUT_S = 120


def scrape(url: str, host: str) -> dict[str, float]:
    """The samples labelled only with ``host`` on a worker's /metrics, by sample name (counters with
    ``_total``, histograms' ``_count`` and ``_sum``; buckets and farm-wide gauges left out)."""
    answer = requests.get(url, timeout=5)
    answer.raise_for_status()
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
        if sample.labels == {"host": host}
    }


def queue_depths(url: str) -> dict[str, float]:
    text = requests.get(url, timeout=5).text
    return {
        sample.labels["queue"]: sample.value
        for family in text_string_to_metric_families(text) if family.name == "dockyard_queue_depth"
        for sample in family.samples
    }


def test_a_miss_a_hit_and_a_join_are_each_counted_once(
    tmp_path: Path, repo: str, base_image: str, settings: Settings, redis_client: redis.Redis,
    farm_workers: list[WorkerProcess],
) -> None:
    worker = farm_workers[0]
    record = next(r for r in live_hosts(redis_client, settings) if r["host"] == worker.host_id)
    url = record["metrics"]
    before = scrape(url, worker.host_id)

    context = slow_context(tmp_path / "ctx", base_image, seconds=2)
    signature = client.build_signature(repo, path=str(context), tag="m").set(queue=team_host_queue(worker.host_id))
    first, second = signature.clone().apply_async(), signature.clone().apply_async()  # a miss and a join
    assert first.get(timeout=TIMEOUT_S)["image_id"] == second.get(timeout=TIMEOUT_S)["image_id"]
    signature.clone().apply_async().get(timeout=TIMEOUT_S)  # a hit, through the worker

    after = scrape(url, worker.host_id)
    delta = {name: after.get(name, 0) - before.get(name, 0) for name in after}
    assert delta["dockyard_cache_misses_total"] == 1
    assert delta["dockyard_builds_total"] == 1
    assert delta["dockyard_joins_total"] == 1
    assert delta["dockyard_cache_hits_total"] == 1
    assert delta["dockyard_build_seconds_count"] == 1 and delta["dockyard_build_seconds_sum"] >= 2
    assert delta["dockyard_wait_seconds_count"] == 1 and delta["dockyard_wait_seconds_sum"] > 0, "the join waited"
    assert delta["dockyard_hit_seconds_count"] == 1
    assert 0 < delta["dockyard_hit_seconds_sum"] < delta["dockyard_build_seconds_sum"]
    depths = queue_depths(url)
    assert {record["build_queue"], host_queue(worker.host_id), fast_queue(worker.host_id)} <= set(depths)


def test_task_events_reach_an_event_consumer(project: Path, repo: str, farm_workers: list[WorkerProcess]) -> None:
    app = operator_app()  # remote control and event receivers are an operator's (the worker user)

    seen: dict[str, list[dict[str, Any]]] = {}
    ready = threading.Event()

    def consume() -> None:
        def on_event(event: dict[str, Any]) -> None:
            seen.setdefault(event.get("uuid", ""), []).append(event)

        with app.connection_for_read() as connection:
            receiver = app.events.Receiver(connection, handlers={"*": on_event})
            ready.set()
            receiver.capture(limit=None, timeout=30, wakeup=True)

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    ready.wait(10)
    time.sleep(0.5)
    result = client.build_signature(repo, path=str(project), tag=f"ev-{uuid.uuid4().hex[:4]}").apply_async()
    result.get(timeout=TIMEOUT_S)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and "task-succeeded" not in {e["type"] for e in seen.get(result.id, [])}:
        time.sleep(0.1)
    types = [event["type"] for event in seen.get(result.id, [])]
    assert {"task-sent", "task-received", "task-started", "task-succeeded"} <= set(types), types
    received = next(e for e in seen[result.id] if e["type"] == "task-received")
    assert received["name"] == "dockyard.build_docker_image"
    assert "'key':" in received["kwargs"] and "context_digest" not in received["kwargs"], "the spec is summarised"
