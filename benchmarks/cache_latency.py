"""Part b: latency of a cache hit.

Three ways to get an image that is already built: dockyard's fast path
(``dockyard.tasks.client.build`` answers from Redis, no worker), the same prepared
spec sent to a worker (``build_signature(...).apply_async().get()``, the
worker answers from its cache), and the Docker engine's own rebuild of the
same context with every layer cached (docker-py ``client.api.build``).
"""

from __future__ import annotations

import cProfile
import io
import pstats
import time
from collections.abc import Callable
from typing import Any

from benchmarks import harness

FAST_PATH_TARGET_MS = 2.0


def _time(call: Callable[[], Any], samples: int, warmup: int) -> tuple[list[float], list[Any]]:
    for _ in range(warmup):
        call()
    timings, answers = [], []
    for _ in range(samples):
        started = time.perf_counter()
        answers.append(call())
        timings.append(time.perf_counter() - started)
    return timings, answers


def _summary(timings: list[float]) -> dict[str, float]:
    return {
        "samples": len(timings),
        "p50_ms": round(harness.percentile(timings, 0.50) * 1000, 3),
        "p99_ms": round(harness.percentile(timings, 0.99) * 1000, 3),
        "min_ms": round(min(timings) * 1000, 3),
        "max_ms": round(max(timings) * 1000, 3),
    }


def engine_cached_rebuild(client: Any, directory: str) -> int:
    """The engine rebuilds the context; returns how many steps it took from its cache."""
    cached = 0
    for event in client.api.build(path=directory, decode=True):
        if "error" in event:
            raise RuntimeError(f"engine rebuild failed: {event['error']}")
        if "Using cache" in event.get("stream", ""):
            cached += 1
    return cached


def profile_fast_path(call: Callable[[], Any], samples: int, top: int = 25) -> str:
    """cProfile over ``samples`` fast-path calls: the top functions by cumulative time."""
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(samples):
        call()
    profiler.disable()
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)
    return text.getvalue()


def run(bench: Any, *, fast_samples: int, worker_samples: int, engine_samples: int, profile: bool) -> dict[str, Any]:
    from dockyard.tasks.client import build, build_signature

    round_id = harness.new_round()
    directory = harness.write_context(bench.scratch / f"b-{round_id[:8]}", round_id, sleep_s=0)
    image_name, tag = bench.image("b-latency"), "hit"

    first = build(image_name, path=str(directory), tag=tag, timeout_s=600)
    holder = first["host"]
    out: dict[str, Any] = {"first_build": {"cache": first.get("cache"), "host": holder}}

    def fast() -> dict[str, Any]:
        return build(image_name, path=str(directory), tag=tag)

    timings, answers = _time(fast, fast_samples, warmup=20)
    out["fast_path"] = _summary(timings)
    out["fast_path"]["not_hits"] = sum(answer.get("cache") != "hit" for answer in answers)

    # pull=False: the key names the base by its tag, so the fast path asks no registry (see README, base images)
    build(image_name, path=str(directory), tag="hit-nopull", pull=False, timeout_s=600)
    timings, answers = _time(lambda: build(image_name, path=str(directory), tag="hit-nopull", pull=False), fast_samples, warmup=20)
    out["fast_path_no_pull"] = _summary(timings)
    out["fast_path_no_pull"]["not_hits"] = sum(answer.get("cache") != "hit" for answer in answers)

    signature = build_signature(image_name, path=str(directory), tag=tag)

    def through_worker() -> dict[str, Any]:
        answer: dict[str, Any] = signature.apply_async().get(timeout=120)
        return answer

    timings, answers = _time(through_worker, worker_samples, warmup=10)
    out["through_worker"] = _summary(timings)
    out["through_worker"]["cache_outcomes"] = {
        source: sum(answer.get("cache") == source for answer in answers)
        for source in sorted({str(answer.get("cache")) for answer in answers})
    }

    client = bench.client_for_host(holder)
    timings, cached = _time(lambda: engine_cached_rebuild(client, str(directory)), engine_samples, warmup=3)
    out["engine_cached_rebuild"] = _summary(timings)
    out["engine_cached_rebuild"]["engine"] = bench.url_for_host(holder)
    out["engine_cached_rebuild"]["cached_steps_per_build"] = min(cached)

    fast_p50 = out["fast_path"]["p50_ms"]
    out["ratio_engine_p50_over_fast_p50"] = round(out["engine_cached_rebuild"]["p50_ms"] / fast_p50, 1)
    out["ratio_worker_p50_over_fast_p50"] = round(out["through_worker"]["p50_ms"] / fast_p50, 1)
    out["ratio_engine_p50_over_worker_p50"] = round(
        out["engine_cached_rebuild"]["p50_ms"] / out["through_worker"]["p50_ms"], 2
    )
    if profile or fast_p50 > FAST_PATH_TARGET_MS:
        out["fast_path_profile"] = profile_fast_path(fast, min(fast_samples, 200))
    return out
