"""What the soak reads from Redis: the keys of its database (patterns, TTLs) and who is connected.

Everything here only reads; the soak's database is its own (``SOAK_REDIS_DB``).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections import Counter
from typing import Any

from benchmarks.soak_plan import SOAK_KEY_PREFIX
from benchmarks.soak_probes import descendants
from dockyard.workers.launcher import WorkerProcess

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_HEX = re.compile(r"[0-9a-f]{32,}")


def key_pattern(name: str, run_id: str) -> str:
    """A key name with its variable parts replaced, to group keys."""
    pattern = name.replace(run_id, "<run>")
    pattern = _UUID.sub("<uuid>", pattern)
    pattern = _HEX.sub("<hex>", pattern)
    pattern = re.sub(r"c\d+-v\d", "<tag>", pattern)
    pattern = re.sub(r":\d+$", ":<n>", pattern)
    return pattern


def _queues_bound(connection: Any, names: list[str]) -> set[str]:
    """Queue names kombu bound to any exchange (members of ``_kombu.binding.*``: rk, pattern, queue)."""
    queues = set()
    for name in names:
        if name.startswith("_kombu.binding."):
            for member in connection.smembers(name):
                text = member.decode(errors="replace") if isinstance(member, bytes) else str(member)
                queues.add(text.split("\x06\x16")[-1])
    return queues



def _ttls_and_types(connection: Any, names: list[str]) -> tuple[list[int], list[str]]:
    """The PTTL and type of every key, pipelined."""
    ttls: list[int] = []
    types: list[str] = []
    for start in range(0, len(names), 500):
        pipe = connection.pipeline(transaction=False)
        for name in names[start:start + 500]:
            pipe.pttl(name)
            pipe.type(name)
        answers = pipe.execute()
        ttls += answers[0::2]
        types += [t.decode() if isinstance(t, bytes) else str(t) for t in answers[1::2]]
    return ttls, types


def _why_no_ttl(name: str, queues: set[str]) -> str:
    """Why a key without a TTL is there."""
    if name.startswith("_kombu.binding"):  # tables, permanent sets, deadlines: kombu keeps them on purpose
        return "kombu binding (expected)"
    if name in queues or name.split("\x06\x16")[0] in queues:
        return "kombu queue"
    if name in ("unacked", "unacked_index"):
        return "kombu unacked messages"
    if name.startswith(SOAK_KEY_PREFIX):
        return "dockyard key WITHOUT TTL"
    return "unexpected"


_LENGTH = {"list": "llen", "hash": "hlen", "zset": "zcard", "set": "scard"}


def _length(connection: Any, name: str, kind: str) -> int | None:
    """Members of a list, hash, sorted set or set; None for other types."""
    command = _LENGTH.get(kind)
    return None if command is None else int(getattr(connection, command)(name))


def redis_snapshot(connection: Any, run_id: str) -> dict[str, Any]:
    """Every key in the soak database: total, patterns, and those without a TTL (classified)."""
    names = sorted(name.decode(errors="replace") for name in connection.scan_iter(count=1000))
    ttls, types = _ttls_and_types(connection, names)
    queues = _queues_bound(connection, names)
    patterns = Counter(key_pattern(name, run_id) for name in names)
    no_ttl = [
        {"key": name, "pattern": key_pattern(name, run_id), "type": kind, "length": _length(connection, name, kind),
         "class": _why_no_ttl(name, queues)}
        for name, ttl, kind in zip(names, ttls, types) if ttl == -1  # -2: gone meanwhile
    ]
    unexpected = [k for k in no_ttl if k["class"] not in ("kombu binding (expected)",)
                  and not (k["class"] == "kombu queue" and not k["length"])]
    return {
        "total": len(names),
        "no_ttl": len(no_ttl),
        "no_ttl_keys": no_ttl,
        "no_ttl_patterns": dict(Counter(k["pattern"] for k in no_ttl)),
        "unexpected_no_ttl": unexpected,
        "soak_keys": sum(1 for n in names if n.startswith(SOAK_KEY_PREFIX)),
        "soak_keys_without_ttl": [k["key"] for k in no_ttl if k["class"] == "dockyard key WITHOUT TTL"],
        "by_pattern": dict(sorted(patterns.items(), key=lambda item: (-item[1], item[0]))),
        "used_memory_bytes": int(connection.info("memory").get("used_memory", 0)),
    }


def _db(connection: Any) -> int:
    return int(connection.connection_pool.connection_kwargs.get("db") or 0)


def _port_owners(port: int) -> dict[int, list[int]]:
    """Local port of each established connection to Redis on ``port`` -> the pids that hold it (from
    ``ss``; a socket opened before a fork is held by the parent and its children alike)."""
    try:
        listing = subprocess.run(["ss", "-tnpH", "state", "established", f"( dport = :{port} )"],
                                 capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    owners = {}
    for line in listing.splitlines():
        match = re.search(rf":(\d+)\s+\S+:{port}\s+users:(.*)$", line)
        if match:
            owners[int(match.group(1))] = [int(pid) for pid in re.findall(r"pid=(\d+)", match.group(2))]
    return owners


def redis_connections(connection: Any, workers: list[WorkerProcess]) -> dict[str, int]:
    """Connections to the soak database, by who holds them: this process, each worker's main
    process (also when its pool children share the socket), its pool children, or someone else."""
    owners = _port_owners(int(connection.connection_pool.connection_kwargs.get("port") or 6379))
    roles = {os.getpid(): (0, "soak client")}
    for worker in workers:
        if worker.running():
            roles[worker.pid] = (0, f"{worker.host_id} main")
            for child in descendants(worker.pid):
                roles[child] = (1, f"{worker.host_id} pool")
    counts: Counter[str] = Counter()
    for client in connection.client_list():
        if str(client.get("db")) != str(_db(connection)):
            continue
        port = int(str(client.get("addr", ":0")).rpartition(":")[2] or 0)
        holders = sorted(roles[pid] for pid in owners.get(port, []) if pid in roles)
        counts[holders[0][1] if holders else "other"] += 1
    return dict(sorted(counts.items()))


def pubsub_clients(connection: Any) -> dict[str, Any]:
    """Redis clients on the soak database holding subscriptions (Celery result consumers)."""
    clients = [c for c in connection.client_list() if str(c.get("db")) == str(_db(connection))]
    subscribed = [c for c in clients if int(c.get("sub", 0)) or int(c.get("psub", 0))]
    return {
        "connections_on_db": len(clients),
        "subscribed_connections": len(subscribed),
        "channels_subscribed": sum(int(c.get("sub", 0)) for c in subscribed),
        "patterns_subscribed": sum(int(c.get("psub", 0)) for c in subscribed),
        "max_output_buffer_bytes": max((int(c.get("omem", 0)) for c in subscribed), default=0),
    }

