"""Dead-host recovery: what a dead host held is run again by a live one, in seconds.

kombu's Redis transport keeps every delivered, unacknowledged message in
Redis (the ``unacked`` hash) until its visibility timeout (an hour by
default). Each worker records the delivery tags it received under its host
id (``inflight:<host>``: task id and retry to delivery tag), so when that host's heartbeat expires a live
worker, under the lease ``recovering:<host>``, puts those messages back on
their queues at once and moves what waits in the dead host's own queue to
the shared queue. A message restored this way leaves the ``unacked`` hash:
the visibility timeout never delivers it a second time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import redis

from config.settings import Settings, host_queue
from tasks import hosts
from tasks.keyspace import key

logger = logging.getLogger("dockyard.recovery")



@dataclass(frozen=True)
class Recovered:
    """What one recovery of ``host`` put back."""

    host: str
    restored: int  # in-flight messages back on their queues
    rerouted: int  # messages moved from the host's own queue to the shared queue


def inflight_key(settings: Settings, host_id: str) -> str:
    return key(settings, "inflight", host_id)


def known_hosts_key(settings: Settings) -> str:
    return key(settings, "hosts-known")


def delivery(task_id: str, retries: int) -> str:
    """The field of one delivery of a task (a retry is another message with the same task id)."""
    return f"{task_id}:{retries}"


def received(connection: redis.Redis, settings: Settings, task_delivery: str, delivery_tag: str) -> None:
    """This host holds ``delivery_tag`` (received, not yet acknowledged)."""
    pipe = connection.pipeline(transaction=False)
    pipe.hset(inflight_key(settings, settings.host_id), task_delivery, delivery_tag)
    pipe.expire(inflight_key(settings, settings.host_id), settings.visibility_timeout_s)
    pipe.hset(known_hosts_key(settings), settings.host_id, settings.build_queue)  # where its queue goes if it dies
    pipe.expire(known_hosts_key(settings), settings.visibility_timeout_s)
    pipe.execute()


def finished(connection: redis.Redis, settings: Settings, task_delivery: str) -> None:
    """This host is done with that delivery."""
    connection.hdel(inflight_key(settings, settings.host_id), task_delivery)


def dead_hosts(connection: redis.Redis, settings: Settings) -> list[str]:
    """Hosts that held work and no longer heartbeat."""
    known = sorted(member.decode() if isinstance(member, bytes) else str(member)
                   for member in connection.hkeys(known_hosts_key(settings)))
    return [host for host in known if host != settings.host_id and not hosts.is_alive(connection, settings, host)]


def recover_host(
    connection: redis.Redis, settings: Settings, broker_channel: Any, host: str, *, reroute: bool = True
) -> Recovered | None:
    """Put back what dead ``host`` held, if no other worker is doing it; None if one is.

    ``reroute``: also move its own queue's messages to the shared queue (not when a
    restarted worker recovers what its previous run held: that queue is its own again).
    """
    lease_s = max(1, int(settings.heartbeat_ttl_s))  # restoring twice is harmless: the lease only saves work
    if not connection.set(key(settings, "recovering", host), settings.host_id, nx=True, ex=lease_s):
        return None
    tags = [tag.decode() if isinstance(tag, bytes) else str(tag) for tag in connection.hvals(inflight_key(settings, host))]
    for tag in tags:
        broker_channel.qos.restore_by_tag(tag, leftmost=True)  # atomic: out of ``unacked``, onto its queue
    rerouted = 0
    broker = broker_channel.client
    shared = connection.hget(known_hosts_key(settings), host)  # the dead host's shared queue, not necessarily ours
    target = shared.decode() if isinstance(shared, bytes) else (shared or settings.build_queue)
    while reroute and broker.lmove(host_queue(host), target, "RIGHT", "LEFT") is not None:
        rerouted += 1
    connection.delete(inflight_key(settings, host))
    if rerouted == 0 and not tags:
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
