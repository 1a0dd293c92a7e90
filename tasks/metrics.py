"""Per-host counters in Redis, rendered in Prometheus' text format.

A worker's pool processes all add to one hash, ``metrics:<host_id>``; the
worker's main process serves it on ``/metrics`` (see ``workers.metrics_server``).
"""

from __future__ import annotations

import redis

from config import defaults
from config.settings import Settings
from tasks.keyspace import key

COUNTERS = {
    "builds_total": "Builds run on this host's engine",
    "cache_misses_total": "Build requests that found no usable cache entry",
    "cache_hits_total": "Build requests answered from the cache on this host",
    "joins_total": "Build requests that joined a build already running",
    "lease_takeovers_total": "Builds taken over after their owner's lease expired",
    "pushes_total": "Pushes run from this host",
    "push_cache_hits_total": "Pushes answered from the cache",
}
DURATIONS = {
    "build_seconds": "Time spent in builds",
    "push_seconds": "Time spent in pushes",
}


def _name(settings: Settings, host_id: str) -> str:
    return key(settings, "metrics", host_id)


def count(connection: redis.Redis, settings: Settings, counter: str, amount: int = 1) -> None:
    if counter not in COUNTERS:
        raise KeyError(counter)
    pipe = connection.pipeline(transaction=False)
    pipe.hincrby(_name(settings, settings.host_id), counter, amount)
    pipe.expire(_name(settings, settings.host_id), defaults.METRICS_TTL_S)
    pipe.execute()


def observe(connection: redis.Redis, settings: Settings, duration: str, seconds: float) -> None:
    if duration not in DURATIONS:
        raise KeyError(duration)
    pipe = connection.pipeline(transaction=False)
    pipe.hincrbyfloat(_name(settings, settings.host_id), f"{duration}_sum", seconds)
    pipe.hincrby(_name(settings, settings.host_id), f"{duration}_count", 1)
    pipe.expire(_name(settings, settings.host_id), defaults.METRICS_TTL_S)
    pipe.execute()


def read(connection: redis.Redis, settings: Settings, host_id: str) -> dict[str, float]:
    raw = connection.hgetall(_name(settings, host_id))
    return {
        (name.decode() if isinstance(name, bytes) else str(name)): float(value)
        for name, value in raw.items()
    }


def _number(value: float) -> str:
    """A sample value written exactly: whole numbers without a fraction, others in full."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def render(connection: redis.Redis, settings: Settings, host_id: str) -> str:
    """The host's counters in Prometheus' text exposition format."""
    values = read(connection, settings, host_id)
    label = f'{{host="{host_id}"}}'
    lines: list[str] = []
    for name, help_text in COUNTERS.items():
        lines += [f"# HELP dockyard_{name} {help_text}", f"# TYPE dockyard_{name} counter",
                  f"dockyard_{name}{label} {_number(values.get(name, 0))}"]
    for name, help_text in DURATIONS.items():
        lines += [f"# HELP dockyard_{name} {help_text}", f"# TYPE dockyard_{name} summary",
                  f"dockyard_{name}_sum{label} {_number(values.get(name + '_sum', 0))}",
                  f"dockyard_{name}_count{label} {_number(values.get(name + '_count', 0))}"]
    return "\n".join(lines) + "\n"
