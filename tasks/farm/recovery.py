"""Dead-host recovery: what a dead host held is run again by a live one, in seconds.

kombu's Redis transport keeps every delivered, unacknowledged message in
Redis (the ``unacked`` hash) until its visibility timeout (an hour by
default). Each worker records the delivery tags it received under its host
id (``inflight:<host>``: task id and retry to delivery tag), so when that host's heartbeat expires a live
worker, under the lease ``recovering:<host>``, puts those messages back on
their queues at once and moves what waits in the dead host's own queue to
the shared queue. A message restored this way leaves the ``unacked`` hash:
the visibility timeout never delivers it a second time.

A host's fast lane (``dockyard.tasks.farm.lane``) records its deliveries apart
(``inflight-fast:<host>``), so each of the host's two workers puts back only
its own previous run's; a dead host's fast lane is recovered with it: its
in-flight messages restored, its fast queue moved to the shared queue.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import redis

from dockyard.config.settings import Settings, fast_queue, host_queue, team_queue
from dockyard.tasks.farm import hosts
from dockyard.tasks.farm.lane import in_fast_lane
from dockyard.tasks.keyspace import key, optional_text, text

logger = logging.getLogger("dockyard.recovery")



@dataclass(frozen=True)
class Recovered:
    """What one recovery of ``host`` put back."""

    host: str
    restored: int  # in-flight messages back on their queues
    rerouted: int  # messages moved from the host's own queues (build and fast) to the shared queue


BUILD_LANE, FAST_LANE = "build", "fast"
LANES = (BUILD_LANE, FAST_LANE)


def inflight_key(settings: Settings, host_id: str, lane: str = BUILD_LANE) -> str:
    return key(settings, "inflight" if lane == BUILD_LANE else "inflight-fast", host_id)


def own_lane() -> str:
    """The lane this process serves."""
    return FAST_LANE if in_fast_lane() else BUILD_LANE


def lane_queue(host_id: str, lane: str) -> str:
    """The queue only ``host_id``'s worker of ``lane`` consumes."""
    return host_queue(host_id) if lane == BUILD_LANE else fast_queue(host_id)


def known_hosts_key(settings: Settings) -> str:
    return key(settings, "hosts-known")


def delivery(task_id: str, retries: int) -> str:
    """The field of one delivery of a task (a retry is another message with the same task id)."""
    return f"{task_id}:{retries}"


def received(connection: redis.Redis, settings: Settings, task_delivery: str, delivery_tag: str) -> None:
    """This host holds ``delivery_tag`` (received, not yet acknowledged)."""
    own = inflight_key(settings, settings.host_id, own_lane())
    pipe = connection.pipeline(transaction=False)
    pipe.hset(own, task_delivery, delivery_tag)
    pipe.expire(own, settings.visibility_timeout_s)
    pipe.hset(known_hosts_key(settings), settings.host_id, settings.build_queue)  # where its queue goes if it dies
    pipe.expire(known_hosts_key(settings), settings.visibility_timeout_s)
    pipe.execute()


def known(connection: redis.Redis, settings: Settings) -> None:
    """This host may hold work (messages routed to its queues): recover it if the host dies."""
    pipe = connection.pipeline(transaction=False)
    pipe.hset(known_hosts_key(settings), settings.host_id, settings.build_queue)
    pipe.expire(known_hosts_key(settings), settings.visibility_timeout_s)
    pipe.execute()


def finished(connection: redis.Redis, settings: Settings, task_delivery: str) -> None:
    """This host is done with that delivery."""
    connection.hdel(inflight_key(settings, settings.host_id, own_lane()), task_delivery)


def dead_hosts(connection: redis.Redis, settings: Settings) -> list[str]:
    """Hosts that held work and no longer heartbeat."""
    known = sorted(text(member)
                   for member in connection.hkeys(known_hosts_key(settings)))
    return [host for host in known if host != settings.host_id and not hosts.is_alive(connection, settings, host)]


def recover_host(
    connection: redis.Redis, settings: Settings, broker_channel: Any, host: str, *, reroute: bool = True,
    lanes: tuple[str, ...] = LANES,
) -> Recovered | None:
    """Put back what dead ``host`` held in ``lanes``, if no other worker is doing it; None if one is.

    ``reroute``: also move its own queues' messages to the shared queue (not when a
    restarted worker recovers what its previous run held: that queue is its own again).
    """
    lease_s = max(1, int(settings.heartbeat_ttl_s))  # restoring twice is harmless: the lease only saves work
    recovering = key(settings, "recovering", host, *([] if lanes == LANES else lanes))
    if not connection.set(recovering, settings.host_id, nx=True, ex=lease_s):
        return None
    inflight = [inflight_key(settings, host, lane) for lane in lanes]
    tags = [text(tag) for each in inflight for tag in connection.hvals(each)]
    for tag in tags:
        broker_channel.qos.restore_by_tag(tag, leftmost=True)  # atomic: out of ``unacked``, onto its queue
    rerouted = 0
    broker = broker_channel.client
    shared = connection.hget(known_hosts_key(settings), host)  # the dead host's shared queue, not necessarily ours
    target = optional_text(shared) or settings.build_queue
    for lane in lanes if reroute else ():
        for team in settings.declared_teams.names:  # each team's messages stay in that team's queues
            while broker.lmove(team_queue(lane_queue(host, lane), team), team_queue(target, team), "RIGHT", "LEFT") is not None:
                rerouted += 1
    connection.delete(*inflight)
    if reroute and rerouted == 0 and not tags:
        # a dead host that held nothing is forgotten; a worker putting back its own previous run's
        # messages never forgets its host (its heartbeat may have listed it already: a host killed
        # before its next beat would then be recovered by nobody)
        connection.hdel(known_hosts_key(settings), host)
    if tags or rerouted:
        logger.warning("host %s is dead: %d in-flight messages restored, %d rerouted to %s",
                       host, len(tags), rerouted, target)
    return Recovered(host, len(tags), rerouted)


def recover_dead_hosts(connection: redis.Redis, settings: Settings, broker_channel: Any) -> list[Recovered]:
    """Recover every dead host that held work (run on each heartbeat)."""
    done = []
    for host in dead_hosts(connection, settings):
        outcome = recover_host(connection, settings, broker_channel, host)
        if outcome is not None:
            done.append(outcome)
    return done
