"""The worker's broker transport: each message carries the queue it was taken from, not what its sender wrote.

kombu's Redis transport takes a message's ``delivery_info`` (exchange and
routing key) from the message body, which the sender wrote, and uses it to
put an unacknowledged message back after a restart. Here, on delivery, both
are replaced by the queue the message was popped from (exchange ``""``:
kombu then routes by the queue's name alone). A task's team is read from that
queue (``dockyard.tasks.teams.identity``), and a message restored after a
worker's death goes back to the queue it came from, never to one its sender named.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis


class _StampsQueue:
    """Mixin: stamp the real queue into each message before kombu's consumer sees it."""

    def _deliver(self, message: Any, queue: str) -> None:
        if isinstance(message, dict):
            properties = message.setdefault("properties", {})
            if isinstance(properties, dict):
                info = properties.get("delivery_info")
                info = dict(info) if isinstance(info, dict) else {}
                info.update(exchange="", routing_key=queue)
                properties["delivery_info"] = info
        super()._deliver(message, queue)  # type: ignore[misc]


class Transport(_StampsQueue, kombu_redis.Transport):
    """kombu's ``redis://`` transport, stamping each message with its queue."""


class SentinelTransport(_StampsQueue, kombu_redis.SentinelTransport):
    """kombu's ``sentinel://`` transport, stamping each message with its queue."""


def transport_for(url: str) -> str:
    """The import path of the stamping transport for a broker URL."""
    name = "SentinelTransport" if url.startswith("sentinel://") else "Transport"
    return f"{__name__}:{name}"
