"""What a worker's ``/metrics`` shows, read from Redis at each scrape (a prometheus_client collector).

Per host (this worker's own, label ``host``): the counters and histograms of
``dockyard.tasks.farm.metrics``. For the farm, the same from every worker: the depth of the
shared queues and of each live host's queue and fast queue (label ``queue``),
the lineages each live host holds and the spills away from each preferred
host (label ``host``; ``dockyard.tasks.routing.placement``), and whether each live host's
build network reaches the farm (its start-up probe, ``dockyard.tasks.engine.network_probe``). A Redis error propagates: the
server answers 503 (``dockyard.workers.metrics_server``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import redis
from kombu.transport.redis import PRIORITY_STEPS, Channel
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from dockyard.config.celery import transport_options
from dockyard.config.settings import Settings, fast_queue, host_queue, team_queue
from dockyard.tasks.farm import metrics
from dockyard.tasks.farm.hosts import live_hosts
from dockyard.tasks.routing.placement import held_key, spills_key
from dockyard.tasks.keyspace import text

PREFIX = "dockyard_"


def queue_keys(settings: Settings, queue: str) -> list[str]:
    """The broker's lists of ``queue``: kombu's Redis transport keeps one per priority step
    (``queue``, then ``queue<sep><step>``), under its ``global_keyprefix`` if one is set."""
    options: dict[str, Any] = transport_options(settings, settings.effective_broker_url)
    prefix = str(options.get("global_keyprefix", ""))
    sep = str(options.get("sep", Channel.sep))
    steps: Sequence[int] = options.get("priority_steps", PRIORITY_STEPS)
    return [prefix + (f"{queue}{sep}{step}" if step else queue) for step in steps]


class FarmCollector:
    """This host's counters and histograms, and the farm's queues and placement, from Redis.

    ``connection``: dockyard's Redis (the cache's); ``broker``: the broker's Redis (None if the
    broker is not Redis: no queue depths nor spills then).
    """

    def __init__(self, settings: Settings, connection: redis.Redis, broker: redis.Redis | None) -> None:
        self.settings = settings
        self.connection = connection
        self.broker = broker

    def collect(self) -> Iterator[Metric]:
        yield from self.host_metrics()
        yield from self.farm_metrics()

    def host_metrics(self) -> Iterator[Metric]:
        """The counters and histograms of this worker's host."""
        host = self.settings.host_id
        values = metrics.read(self.connection, self.settings, host)
        for name, description in metrics.COUNTERS.items():
            counter = CounterMetricFamily(PREFIX + name, description, labels=["host"])
            counter.add_metric([host], values.get(name, 0.0))
            yield counter
        for name, histogram in metrics.HISTOGRAMS.items():
            family = HistogramMetricFamily(PREFIX + name, histogram.description, labels=["host"])
            family.add_metric([host], metrics.cumulative_buckets(values, name), values.get(f"{name}_sum", 0.0))
            yield family

    def farm_metrics(self) -> Iterator[Metric]:
        """Queue depths, lineages per live host and spills: the same from every worker of the farm."""
        records = live_hosts(self.connection, self.settings)
        hosts = sorted({str(record["host"]) for record in records})
        pipe = self.connection.pipeline(transaction=False)
        for host in hosts:
            pipe.zcard(held_key(self.settings, host))
        held = pipe.execute()
        pools = {str(record["build_queue"]) for record in records if record.get("build_queue")}
        shared = sorted({self.settings.build_queue} | pools)
        queues = shared + [name for host in hosts for name in (host_queue(host), fast_queue(host))]
        teams = self.settings.declared_teams.names
        team_depths, spills = self.broker_counts([team_queue(queue, team) for queue in queues for team in teams], shared)
        depths = [sum(team_depths[index * len(teams):(index + 1) * len(teams)]) for index in range(len(queues))] if team_depths else []

        depth = GaugeMetricFamily(PREFIX + "queue_depth", "Messages waiting in a queue of the broker (its teams' queues together)", labels=["queue"])
        for queue, length in zip(queues, depths):
            depth.add_metric([queue], length)
        yield depth
        lineages = GaugeMetricFamily(
            PREFIX + "placement_lineages",
            "Lineages a live host built lately (placement prefers it for them; as dockyard hosts lists)",
            labels=["host"],
        )
        for host, count in zip(hosts, held):
            lineages.add_metric([host], float(count))
        yield lineages
        spilled = CounterMetricFamily(
            PREFIX + "placement_spills_total",
            "Builds sent to the shared queue because their lineage's preferred host was saturated",
            labels=["host"],
        )
        for host, count in sorted(spills.items()):
            spilled.add_metric([host], count)
        yield spilled
        reaches = GaugeMetricFamily(
            PREFIX + "build_network_reaches_farm",
            "1 if a live host's start-up probe step reached the farm's Redis, context store or /metrics from its "
            "default build network, 0 if not (absent: the probe did not run)",
            labels=["host", "network"],
        )
        for record in records:
            probe = record.get("build_network")
            if isinstance(probe, dict) and isinstance(probe.get("reaches_farm"), bool):
                reaches.add_metric([str(record["host"]), str(probe.get("network"))], 1.0 if probe["reaches_farm"] else 0.0)
        yield reaches

    def broker_counts(self, queues: list[str], shared: list[str]) -> tuple[list[float], dict[str, float]]:
        """Each queue's length (its priority lists summed), and the spills per preferred host."""
        if self.broker is None:
            return [], {}
        keys = [queue_keys(self.settings, queue) for queue in queues]
        pipe = self.broker.pipeline(transaction=False)
        for names in keys:
            for name in names:
                pipe.llen(name)
        for queue in shared:
            pipe.hgetall(spills_key(queue))
        answers = iter(pipe.execute())
        lengths = [float(sum(next(answers) for _each in names)) for names in keys]
        spills: dict[str, float] = {}
        for raw in answers:  # the spill hashes, after the lengths
            for host, count in raw.items():
                name = text(host)
                spills[name] = spills.get(name, 0.0) + _number(count)
        return lengths, spills


def _number(raw: bytes | str) -> float:
    """A spill count as callers wrote it (they may write anything there): 0 if not a number."""
    try:
        return float(raw)
    except ValueError:
        return 0.0
