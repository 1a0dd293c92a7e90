"""Per-host counters and histograms in Redis, written by every process of a worker.

A worker's pool processes (and its fast lane's threads) all add to one hash,
``metrics:<host_id>``; the worker's main process reads it for its ``/metrics``
(``dockyard.workers.metrics_collector``, served by ``dockyard.workers.metrics_server``).

Fields: a counter is one field (``builds_total``). A histogram is one field
per finite bucket, cumulative (``build_seconds_bucket:2.5``: observations up
to 2.5 s), its ``_sum`` and its ``_count``, which is also its ``+Inf``
bucket. One observation writes them all in one MULTI/EXEC, so a reader never
sees a bucket ahead of the count.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from dockyard.config.settings import Settings
from dockyard.tasks.keyspace import key, text

METRICS_TTL_S = 30 * 24 * 3600  # a host's counters expire a month after their last change

COUNTERS = {
    "builds_total": "Builds run on this host's engine",
    "cache_misses_total": "Build requests that found no usable cache entry",
    "cache_hits_total": "Build requests answered from the cache on this host",
    "joins_total": "Build requests that joined a build already running",
    "lease_takeovers_total": "Builds taken over after their owner's lease expired",
    "pushes_total": "Pushes run from this host",
    "push_cache_hits_total": "Pushes answered from the cache",
}


@dataclass(frozen=True)
class Histogram:
    """A histogram's help text and the upper bounds of its finite buckets, ascending."""

    description: str
    buckets: tuple[float, ...]


# builds and waits for them: half a second to an hour (past the default task time limit); hits: milliseconds
LONG_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0)
SHORT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
PUSH_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
HISTOGRAMS = {
    "build_seconds": Histogram("Time spent in builds (a miss: the lease, the build, storing its entry)", LONG_BUCKETS),
    "wait_seconds": Histogram("Time build requests spent waiting for a build already running (a join)", LONG_BUCKETS),
    "hit_seconds": Histogram("Time from a build task's start to its answer from the cache here", SHORT_BUCKETS),
    "push_seconds": Histogram("Time spent in pushes", PUSH_BUCKETS),
}


def _name(settings: Settings, host_id: str) -> str:
    return key(settings, "metrics", host_id)


def bucket_field(histogram: str, bound: float) -> str:
    """The hash field of ``histogram``'s cumulative bucket up to ``bound``."""
    return f"{histogram}_bucket:{le_label(bound)}"


def le_label(bound: float) -> str:
    """A bucket's ``le`` as Prometheus writes it: ``2.5``, ``1.0``, ``+Inf``."""
    return "+Inf" if bound == float("inf") else repr(float(bound))


def count(connection: redis.Redis, settings: Settings, counter: str, amount: int = 1) -> None:
    """Add ``amount`` to this host's ``counter``."""
    if counter not in COUNTERS:
        raise KeyError(counter)
    pipe = connection.pipeline(transaction=False)
    pipe.hincrby(_name(settings, settings.host_id), counter, amount)
    pipe.expire(_name(settings, settings.host_id), METRICS_TTL_S)
    pipe.execute()


def observe(connection: redis.Redis, settings: Settings, histogram: str, seconds: float) -> None:
    """Add one observation of ``seconds`` to this host's ``histogram``."""
    if histogram not in HISTOGRAMS:
        raise KeyError(histogram)
    name = _name(settings, settings.host_id)
    pipe = connection.pipeline(transaction=True)
    for bound in HISTOGRAMS[histogram].buckets:
        if seconds <= bound:
            pipe.hincrby(name, bucket_field(histogram, bound), 1)
    pipe.hincrbyfloat(name, f"{histogram}_sum", seconds)
    pipe.hincrby(name, f"{histogram}_count", 1)
    pipe.expire(name, METRICS_TTL_S)
    pipe.execute()


def read(connection: redis.Redis, settings: Settings, host_id: str) -> dict[str, float]:
    """Every field of ``host_id``'s hash (the unset are absent)."""
    raw = connection.hgetall(_name(settings, host_id))
    return {
        text(name): float(value)
        for name, value in raw.items()
    }


def cumulative_buckets(values: dict[str, float], histogram: str) -> list[tuple[str, float]]:
    """``histogram``'s buckets from ``read``'s fields, ``+Inf`` last (its count: observations
    written before the buckets existed fall in ``+Inf`` only)."""
    buckets = [(le_label(bound), values.get(bucket_field(histogram, bound), 0.0))
               for bound in HISTOGRAMS[histogram].buckets]
    highest = buckets[-1][1] if buckets else 0.0
    return [*buckets, ("+Inf", max(highest, values.get(f"{histogram}_count", 0.0)))]
