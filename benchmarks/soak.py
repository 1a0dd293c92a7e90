"""Soak: many small builds, identical and distinct, over the farm's two engines with two real workers.

    python -m benchmarks.soak [--builds 500] [--distinct 150] [--clients 8] [--json PATH]

``--builds`` requests are drawn from ``--distinct`` tiny contexts (``FROM`` the
farm's base image, ``LABEL``s naming the soak run and the context, ``COPY`` of a
small file, ``RUN echo <uuid>``) and sent by ``--clients`` threads calling
``tasks.client.build``; tags vary a little, so some requests are "same
content, other tags", and some identical requests are sent back to back.
Every ``--push-every``-th request also pushes its result.

Reported, printed and written as JSON with ``--json``: builds requested,
failures (count, first errors), outcomes by cache source, wall time, builds
counted on the engines (RUN-step container starts carrying the run's label,
followed live on both engines' event streams, per context),
Redis keys before and after (total, keys without a TTL), worker memory
(VmRSS of each worker's main process and pool children) at start, mid-way and
end, and a list of checks. Exit code 0 only if every check passed.

Runs on its own Redis database (10) and key prefix (``dockyard-soak:``), and
removes what it made at the end, even after a failure: workers, every image
carrying the soak label on both engines, the pushed manifests, database 10
(FLUSHDB) and its temporary directories; SIGTERM and SIGHUP also clean up. One
soak at a time (a lock in the farm dir). Test runs seen on the machine during the
soak fail a check: they share the engines. Expects the farm up and farm.env
exported (``bash benchmarks/soak.sh`` does both).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import harness

SOAK_REDIS_DB = 10  # the farm uses 0, the bench 12, the tests 13
SOAK_KEY_PREFIX = "dockyard-soak:"
SOAK_REPOSITORY = "dockyard-soak"  # images are <registry>/dockyard-soak/<run>:c<context>-v<variant>
SOAK_LABEL = "io.dockyard.soak.run"  # on every image and RUN container the soak makes; its value is the run id
CONTEXT_LABEL = "io.dockyard.soak.context"  # which of the run's contexts an image or RUN container is
WALL_BUDGET_S = 600.0
CALL_TIMEOUT_S = 240.0  # one build or push call
MEMORY_SAMPLE_S = 5.0
PROGRESS_S = 15.0
FIRST_ERRORS = 5
TAG_VARIANTS = (("v0", 70), ("v1", 20), ("v2", 10))  # tag of a repeated request: mostly the same, some others
BURST_FRACTION = 0.35  # share of repeated contexts whose requests are sent back to back (they join)


# ---------------------------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class Request:
    index: int
    context: int
    tag: str
    push: bool


def make_plan(builds: int, distinct: int, push_every: int, rng: random.Random) -> list[Request]:
    """``builds`` requests over ``distinct`` contexts, every context at least once.

    A context requested several times gets mostly its first tag again (an
    identical request) and sometimes another (same content, other tags). The
    requests of about a third of the repeated contexts are sent back to back,
    so they run concurrently; the rest are spread over the run.
    """
    distinct = max(1, min(distinct, builds))
    counts = [1] * distinct
    for _ in range(builds - distinct):
        counts[rng.randrange(distinct)] += 1
    names = [name for name, _ in TAG_VARIANTS]
    weights = [float(weight) for _, weight in TAG_VARIANTS]
    groups: list[list[tuple[int, str]]] = []
    for context, count in enumerate(counts):
        variants = ["v0"] + [rng.choices(names, weights=weights)[0] for _ in range(count - 1)]
        copies = [(context, f"c{context:03d}-{variant}") for variant in variants]
        if count > 1 and rng.random() < BURST_FRACTION:
            groups.append(copies)
        else:
            groups.extend([copy] for copy in copies)
    rng.shuffle(groups)
    flat = [copy for group in groups for copy in group]
    return [
        Request(index, context, tag, push=push_every > 0 and (index + 1) % push_every == 0)
        for index, (context, tag) in enumerate(flat)
    ]


def write_contexts(root: Path, run_id: str, distinct: int) -> list[Path]:
    """One tiny context per distinct build: a Dockerfile and a small file, both unique."""
    paths = []
    for context in range(distinct):
        directory = root / f"ctx-{context:03d}"
        directory.mkdir(parents=True)
        unique = uuid.uuid4().hex
        (directory / "data.txt").write_text(f"soak {run_id} context {context} {unique}\n" + "x" * 200 + "\n")
        (directory / "Dockerfile").write_text(
            f"FROM {harness.base_image()}\n"
            f"LABEL {SOAK_LABEL}={run_id}\n"
            f"LABEL {CONTEXT_LABEL}={context}\n"
            "COPY data.txt /data.txt\n"
            f"RUN echo {unique} > /built\n"
        )
        paths.append(directory)
    return paths


# ---------------------------------------------------------------------------------------------- memory


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (the worker's prefork pool children and anything they run)."""
    parents: dict[int, list[int]] = defaultdict(list)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        if len(fields) > 1:
            parents[int(fields[1])].append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def worker_memory(worker: harness.BenchWorker) -> dict[str, Any]:
    """VmRSS of the worker's main process plus its pool children, in kB."""
    if worker.process is None or worker.process.poll() is not None:
        return {"alive": False, "rss_kb": 0, "main_kb": 0, "children_kb": 0, "processes": 0}
    pid = worker.process.pid
    children = _descendants(pid)
    main_kb = _rss_kb(pid)
    children_kb = sum(_rss_kb(child) for child in children)
    return {"alive": True, "rss_kb": main_kb + children_kb, "main_kb": main_kb, "children_kb": children_kb,
            "processes": 1 + len(children)}


class MemoryLog:
    """Samples of every worker's memory: start, mid-way, end, and one every few seconds."""

    def __init__(self, workers: list[harness.BenchWorker], connections: Any = None) -> None:
        self.workers = workers
        self.samples: list[dict[str, Any]] = []
        self.marks: dict[str, dict[str, Any]] = {}
        self.connections_at: dict[str, Any] = {}  # Redis connections by holder, at each mark
        self._connections = connections
        self._began = time.monotonic()

    def sample(self, mark: str | None = None) -> dict[str, Any]:
        taken = {"t_s": round(time.monotonic() - self._began, 1),
                 "workers": {w.host_id: worker_memory(w) for w in self.workers},
                 "client_kb": _rss_kb(os.getpid())}
        self.samples.append(taken)
        if mark is not None:
            self.marks[mark] = taken
            if self._connections is not None:
                try:
                    self.connections_at[mark] = self._connections()
                except Exception as exc:  # noqa: BLE001 - a figure, not the run
                    self.connections_at[mark] = f"{type(exc).__name__}: {exc}"
        return taken

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"samples": len(self.samples), "per_worker": {}}
        for worker in self.workers:
            name = worker.host_id
            series = [s["workers"][name]["rss_kb"] for s in self.samples if s["workers"][name]["alive"]]
            figures = {mark: taken["workers"][name] for mark, taken in self.marks.items()}
            start = figures.get("start", {}).get("rss_kb", 0)
            mid = figures.get("mid", {}).get("rss_kb", 0)
            end = figures.get("end", {}).get("rss_kb", 0)
            out["per_worker"][name] = {
                "start_kb": start, "mid_kb": mid, "end_kb": end, "peak_kb": max(series, default=0),
                "processes": {mark: fig.get("processes") for mark, fig in figures.items()},
                "ratio_end_over_start": round(end / start, 3) if start else None,
                "ratio_end_over_mid": round(end / mid, 3) if mid else None,
                "detail": figures,
            }
        out["client_kb"] = {mark: taken["client_kb"] for mark, taken in self.marks.items()}
        out["redis_connections"] = self.connections_at
        out["series_kb"] = [
            [s["t_s"], *(s["workers"][w.host_id]["rss_kb"] for w in self.workers)] for s in self.samples
        ]
        return out


# ---------------------------------------------------------------------------------------------- redis

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


def redis_snapshot(connection: Any, run_id: str) -> dict[str, Any]:
    """Every key in the soak database: total, patterns, and those without a TTL (classified)."""
    names = sorted(name.decode(errors="replace") for name in connection.scan_iter(count=1000))
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
    queues = _queues_bound(connection, names)
    patterns: Counter[str] = Counter()
    no_ttl: list[dict[str, Any]] = []
    soak_no_ttl: list[str] = []
    for name, ttl, kind in zip(names, ttls, types):
        patterns[key_pattern(name, run_id)] += 1
        if ttl != -1:  # -2: gone meanwhile
            continue
        if name.startswith("_kombu.binding"):  # tables, permanent sets, deadlines: kombu keeps them on purpose
            why = "kombu binding (expected)"
        elif name in queues or name.split("\x06\x16")[0] in queues:
            why = "kombu queue"
        elif name in ("unacked", "unacked_index"):
            why = "kombu unacked messages"
        elif name.startswith(SOAK_KEY_PREFIX):
            why = "dockyard key WITHOUT TTL"
            soak_no_ttl.append(name)
        else:
            why = "unexpected"
        length = None
        if kind == "list":
            length = connection.llen(name)
        elif kind == "hash":
            length = connection.hlen(name)
        elif kind == "zset":
            length = connection.zcard(name)
        elif kind == "set":
            length = connection.scard(name)
        no_ttl.append({"key": name, "pattern": key_pattern(name, run_id), "type": kind, "length": length,
                       "class": why})
    unexpected = [k for k in no_ttl if k["class"] not in ("kombu binding (expected)",)
                  and not (k["class"] == "kombu queue" and not k["length"])]
    return {
        "total": len(names),
        "no_ttl": len(no_ttl),
        "no_ttl_keys": no_ttl,
        "no_ttl_patterns": dict(Counter(k["pattern"] for k in no_ttl)),
        "unexpected_no_ttl": unexpected,
        "soak_keys": sum(1 for n in names if n.startswith(SOAK_KEY_PREFIX)),
        "soak_keys_without_ttl": soak_no_ttl,
        "by_pattern": dict(sorted(patterns.items(), key=lambda item: (-item[1], item[0]))),
        "used_memory_bytes": int(connection.info("memory").get("used_memory", 0)),
    }


def _db(connection: Any) -> int:
    return int(connection.connection_pool.connection_kwargs.get("db") or 0)


def _port_owners() -> dict[int, list[int]]:
    """Local port of each established connection to Redis -> the pids that hold it (from ``ss``;
    a socket opened before a fork is held by the parent and its children alike)."""
    import subprocess

    try:
        listing = subprocess.run(["ss", "-tnpH", "state", "established", "( dport = :6379 )"],
                                 capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    owners = {}
    for line in listing.splitlines():
        match = re.search(r":(\d+)\s+\S+:6379\s+users:(.*)$", line)
        if match:
            owners[int(match.group(1))] = [int(pid) for pid in re.findall(r"pid=(\d+)", match.group(2))]
    return owners


def redis_connections(connection: Any, workers: list[harness.BenchWorker]) -> dict[str, int]:
    """Connections to the soak database, by who holds them: this process, each worker's main
    process (also when its pool children share the socket), its pool children, or someone else."""
    owners = _port_owners()
    roles = {os.getpid(): (0, "soak client")}
    for worker in workers:
        if worker.process is not None and worker.process.poll() is None:
            roles[worker.process.pid] = (0, f"{worker.host_id} main")
            for child in _descendants(worker.process.pid):
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


# ---------------------------------------------------------------------------------------------- engines


class EngineWatch:
    """Counts, live, the container events carrying the run's label on each engine.

    Live, because an engine replays only its last 256 events (of every kind) to
    a ``since`` query, far fewer than a soak makes: counting afterwards undercounts.
    RUN-step containers are the ones started; their ``io.dockyard.soak.context``
    label tells which context was built.
    """

    def __init__(self, urls: list[str], run_id: str) -> None:
        import docker

        self.run_id = run_id
        self.clients = [docker.DockerClient(base_url=url, timeout=None) for url in urls]
        self.starts: dict[str, int] = {f"engine{n}": 0 for n in range(1, len(urls) + 1)}
        self.creates: dict[str, int] = dict.fromkeys(self.starts, 0)
        self.by_context: dict[int, list[str]] = defaultdict(list)  # context -> engines that ran its RUN step
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._streams: list[Any] = []
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()

    def start(self) -> None:
        for number, client in enumerate(self.clients, start=1):
            stream = client.events(decode=True, filters={
                "type": "container", "event": ["create", "start"], "label": f"{SOAK_LABEL}={self.run_id}"})
            self._streams.append(stream)
            thread = threading.Thread(target=self._consume, args=(f"engine{number}", stream),
                                      name=f"soak-events-{number}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def _consume(self, engine: str, stream: Any) -> None:
        try:
            for event in stream:
                action = event.get("Action") or event.get("status")
                attributes = (event.get("Actor") or {}).get("Attributes") or {}
                with self._lock:
                    if action == "create":
                        self.creates[engine] += 1
                    elif action == "start":
                        self.starts[engine] += 1
                        context = attributes.get(CONTEXT_LABEL)
                        if context is not None and str(context).isdigit():
                            self.by_context[int(context)].append(engine)
        except Exception as exc:  # noqa: BLE001 - closing the stream ends the loop this way too
            if not self._stopping.is_set():
                self.errors.append(f"{engine}: {type(exc).__name__}: {exc}")

    def stop(self, settle_s: float = 1.5) -> dict[str, Any]:
        time.sleep(settle_s)  # the last events reach the streams
        self._stopping.set()
        for stream in self._streams:
            try:
                stream.close()
            except Exception:  # noqa: BLE001
                pass
        for thread in self._threads:
            thread.join(timeout=5)
        for client in self.clients:
            client.close()
        with self._lock:
            runs = Counter(len(engines) for engines in self.by_context.values())
            return {
                "total": sum(self.starts.values()), "per_engine": dict(self.starts),
                "container_creates": dict(self.creates),
                "contexts_built": len(self.by_context),
                "contexts_built_more_than_once": {
                    str(c): e for c, e in sorted(self.by_context.items()) if len(e) > 1},
                "runs_per_context_histogram": {str(k): v for k, v in sorted(runs.items())},
                "stream_errors": self.errors,
            }


class TestRunMonitor:
    """Notices test runs (pytest, .ci/run, workers/run.sh test) that share the engines during the soak."""

    PATTERN = re.compile(r"pytest|\.ci/run|workers/run\.sh test")

    def __init__(self) -> None:
        self.seen: dict[int, str] = {}

    def scan(self) -> None:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) in self.seen:
                continue
            try:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                continue
            if command and self.PATTERN.search(command):
                self.seen[int(entry.name)] = command[:160]


def soak_images(client: Any, *, all_layers: bool, run_id: str | None = None) -> set[str]:
    """Ids of images carrying the soak label (of one run, or of any soak run)."""
    label = SOAK_LABEL if run_id is None else f"{SOAK_LABEL}={run_id}"
    return {image.id for image in client.images.list(all=all_layers, filters={"label": label})}


def remove_soak_images(clients: list[Any], repository: str | None) -> dict[str, Any]:
    """Remove from every engine the images carrying the soak label (any soak run: leftovers of an
    interrupted one go too), intermediate layers included, and anything tagged in ``repository``.
    Only images with the label or in the soak's own repository are touched."""
    import docker.errors

    removed = 0
    errors: list[str] = []
    for client in clients:
        for attempt in range(8):
            try:
                ids = soak_images(client, all_layers=attempt > 0)
                if repository:
                    ids.update(image.id for image in client.images.list(name=repository))
            except docker.errors.DockerException as exc:
                errors.append(f"{client.api.base_url}: list: {exc}")
                break
            if not ids:
                break
            progress = False
            for image_id in sorted(ids):
                try:
                    client.images.remove(image_id, force=True)
                    removed += 1
                    progress = True
                except docker.errors.ImageNotFound:
                    progress = True
                except docker.errors.APIError as exc:
                    if exc.status_code != 409 or attempt == 7:  # 409: a parent whose child goes first
                        errors.append(f"{client.api.base_url}: {image_id}: {exc}")
            if not progress and attempt > 0:
                break
    return {"removed": removed, "errors": errors[:10]}


def delete_manifests(repository_path: str, digests: list[str]) -> dict[str, Any]:
    """Delete the pushed manifests from the farm's registry (its storage has delete enabled)."""
    registry, user, password = harness.registry()
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    deleted, errors = 0, []
    for digest in sorted(set(digests)):
        request = urllib.request.Request(
            f"http://{registry}/v2/{repository_path}/manifests/{digest}", method="DELETE",
            headers={"Authorization": f"Basic {token}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                deleted += response.status in (200, 202)
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                errors.append(f"{digest}: HTTP {exc.code}")
        except OSError as exc:
            errors.append(f"{digest}: {exc}")
    return {"deleted": deleted, "errors": errors}


# ---------------------------------------------------------------------------------------------- the run


@dataclass
class Tally:
    """What the client threads saw, under one lock."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    results: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    pushes: list[dict[str, Any]] = field(default_factory=list)
    push_errors: list[dict[str, Any]] = field(default_factory=list)
    answered: int = 0
    next_index: int = 0
    not_sent: int = 0


class Soak:
    def __init__(self, args: argparse.Namespace, scratch: Path) -> None:
        from config.settings import get_settings
        from tasks.keyspace import redis_for

        self.args = args
        self.scratch = scratch
        self.run_id = uuid.uuid4().hex[:10]
        self.registry = harness.registry()[0]
        self.repository = f"{self.registry}/{SOAK_REPOSITORY}/{self.run_id}"
        self.engine_urls = harness.docker_hosts()[:2]
        if len(self.engine_urls) < 2:
            raise SystemExit("the soak needs two engines (DOCKYARD_FARM_DOCKER_HOSTS): run benchmarks/soak.sh")
        self.clients = [harness.engine(url) for url in self.engine_urls]
        self.settings = get_settings()
        self.redis = redis_for(self.settings)
        db = self.redis.connection_pool.connection_kwargs.get("db")
        if int(db or 0) != args.redis_db or self.settings.key_prefix != SOAK_KEY_PREFIX:
            raise SystemExit(f"refusing to run: dockyard points at db {db} prefix {self.settings.key_prefix!r}")
        self.workers: list[harness.BenchWorker] = []
        self.tally = Tally()
        self.pushed_digests: list[str] = []

    # -- workers

    def start_workers(self) -> float:
        from workers.app import app

        started = time.monotonic()
        for index, url in enumerate(self.engine_urls, start=1):
            worker = harness.BenchWorker(f"soak-{self.run_id}-{index}", url, self.scratch / f"worker-{index}.log",
                                         concurrency=self.args.concurrency)
            self.workers.append(worker.start())
        harness.wait_for_workers(app, self.workers, timeout_s=180)
        return time.monotonic() - started

    def workers_alive(self) -> list[str]:
        return [w.host_id for w in self.workers if w.process is not None and w.process.poll() is None]

    # -- clients

    def client_thread(self, plan: list[Request], paths: list[Path], deadline: float, stop: threading.Event) -> None:
        from tasks.client import build, push

        tally = self.tally
        while not stop.is_set():
            with tally.lock:
                if tally.next_index >= len(plan):
                    return
                if time.monotonic() > deadline:
                    tally.not_sent += len(plan) - tally.next_index
                    tally.next_index = len(plan)
                    return
                request = plan[tally.next_index]
                tally.next_index += 1
            began = time.monotonic()
            try:
                result = build(self.repository, path=str(paths[request.context]), tag=request.tag,
                               timeout_s=CALL_TIMEOUT_S)
            except Exception as exc:  # noqa: BLE001 - every failure is reported
                with tally.lock:
                    tally.answered += 1
                    tally.errors.append({"index": request.index, "tag": request.tag,
                                         "error": f"{type(exc).__name__}: {exc}"[:500],
                                         "after_s": round(time.monotonic() - began, 3)})
                continue
            record = {
                "index": request.index, "context": request.context, "tag": request.tag,
                "cache": result.get("cache"), "host": result.get("host"), "image_id": result.get("image_id"),
                "image": result.get("image"), "latency_s": round(time.monotonic() - began, 4),
                "sent_at": began, "answered_at": time.monotonic(),
            }
            with tally.lock:
                tally.answered += 1
                tally.results.append(record)
            if request.push:
                self.push_one(push, request, record)

    def push_one(self, push: Any, request: Request, built: dict[str, Any]) -> None:
        began = time.monotonic()
        try:
            result = push(self.repository, tag=request.tag, timeout_s=CALL_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001
            with self.tally.lock:
                self.tally.push_errors.append({"index": request.index, "tag": request.tag,
                                               "error": f"{type(exc).__name__}: {exc}"[:500]})
            return
        with self.tally.lock:
            self.tally.pushes.append({
                "index": request.index, "tag": request.tag, "cache": result.get("cache"),
                "host": result.get("host"), "built_on": built.get("host"), "digest": result.get("digest"),
                "latency_s": round(time.monotonic() - began, 4),
            })
            if result.get("digest"):
                self.pushed_digests.append(str(result["digest"]))

    def run_requests(
        self, plan: list[Request], paths: list[Path], memory: MemoryLog, monitor: TestRunMonitor
    ) -> dict[str, Any]:
        stop = threading.Event()
        started = time.monotonic()
        deadline = started + self.args.max_wall
        threads = [threading.Thread(target=self.client_thread, args=(plan, paths, deadline, stop),
                                    name=f"soak-client-{n}", daemon=True) for n in range(self.args.clients)]
        for thread in threads:
            thread.start()
        next_sample = started + MEMORY_SAMPLE_S
        next_progress = started + PROGRESS_S
        dead: list[str] = []
        while any(thread.is_alive() for thread in threads):
            time.sleep(0.5)
            now = time.monotonic()
            with self.tally.lock:
                answered = self.tally.answered
                failures = len(self.tally.errors) + len(self.tally.push_errors)
                outcomes = Counter(r["cache"] for r in self.tally.results)
            if "mid" not in memory.marks and answered >= len(plan) // 2:
                memory.sample("mid")
            elif now >= next_sample:
                memory.sample()
                monitor.scan()
                next_sample = now + MEMORY_SAMPLE_S
            if now >= next_progress:
                rss = "/".join(f"{w['rss_kb'] / 1024:.0f}" for w in memory.samples[-1]["workers"].values())
                print(f"soak: {answered}/{len(plan)} answered after {now - started:.0f} s, {failures} failures, "
                      f"outcomes {dict(outcomes)}, worker RSS MiB {rss}", flush=True)
                next_progress = now + PROGRESS_S
            alive = self.workers_alive()
            if len(alive) < len(self.workers) and not dead:
                dead = [w.host_id for w in self.workers if w.host_id not in alive]
                print(f"soak: worker(s) {dead} exited: no new requests", file=sys.stderr, flush=True)
                stop.set()
            if now > deadline + CALL_TIMEOUT_S + 30:
                print("soak: client threads still busy long after the wall budget: giving up on them",
                      file=sys.stderr, flush=True)
                stop.set()
                break
        wall = time.monotonic() - started
        last_answer = max((r["answered_at"] for r in self.tally.results), default=started)
        return {"wall_s": round(wall, 2), "last_build_answered_s": round(last_answer - started, 2),
                "workers_died": dead, "threads_still_running": sum(t.is_alive() for t in threads)}

    # -- verification

    def verify_tags(self) -> dict[str, Any]:
        """Each answered reference names, on the host the answer gave, the image id the answer gave."""
        import docker.errors

        by_host = {w.host_id: client for w, client in zip(self.workers, self.clients)}
        seen: set[tuple[str, str, str]] = set()
        mismatches = []
        for record in self.tally.results:
            seen.add((record["image"], record["host"], record["image_id"]))
        for reference, host, image_id in sorted(seen):
            client = by_host.get(host)
            if client is None:
                mismatches.append({"reference": reference, "host": host, "problem": "unknown host"})
                continue
            try:
                found = client.images.get(reference).id
            except docker.errors.ImageNotFound:
                mismatches.append({"reference": reference, "host": host, "problem": "not on that host"})
                continue
            if found.removeprefix("sha256:") != str(image_id).removeprefix("sha256:"):
                mismatches.append({"reference": reference, "host": host, "problem": f"is {found}, answer said {image_id}"})
        return {"references_checked": len(seen), "mismatches": mismatches}

    # -- cleanup

    def cleanup(self) -> dict[str, Any]:
        report: dict[str, Any] = {}
        for worker in self.workers:
            worker.stop()
        report["workers_stopped"] = [w.host_id for w in self.workers]
        report["workers_still_running"] = self.workers_alive()
        try:
            report["images_before"] = {f"engine{n}": len(soak_images(c, all_layers=True, run_id=self.run_id))
                                       for n, c in enumerate(self.clients, start=1)}
            report["image_removal"] = remove_soak_images(self.clients, self.repository)
            report["images_left"] = {
                f"engine{n}": len(soak_images(c, all_layers=True)) + len(c.images.list(name=self.repository))
                for n, c in enumerate(self.clients, start=1)
            }
        except Exception as exc:  # noqa: BLE001 - the rest of the cleanup still runs
            report["image_error"] = f"{type(exc).__name__}: {exc}"
        if self.pushed_digests:
            report["registry_manifests"] = delete_manifests(f"{SOAK_REPOSITORY}/{self.run_id}", self.pushed_digests)
        try:
            report["redis_keys_flushed"] = int(self.redis.dbsize())
            self.redis.flushdb()
            report["redis_keys_left"] = int(self.redis.dbsize())
        except Exception as exc:  # noqa: BLE001
            report["redis_error"] = f"{type(exc).__name__}: {exc}"
        for client in self.clients:
            client.close()
        return report


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {"p50": round(harness.percentile(values, 0.5), 3), "p90": round(harness.percentile(values, 0.9), 3),
            "p99": round(harness.percentile(values, 0.99), 3), "max": round(max(values), 3)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    began = time.monotonic()
    out: dict[str, Any] = {"options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    scratch = Path(tempfile.mkdtemp(prefix="dockyard-soak-"))
    soak = Soak(args, scratch)
    out["run_id"] = soak.run_id
    out["repository"] = soak.repository
    out["engines"] = soak.engine_urls
    print(f"soak: run {soak.run_id}: {args.builds} builds over {args.distinct} contexts, {args.clients} client "
          f"threads, workers with concurrency {args.concurrency}, Redis db {args.redis_db}", flush=True)
    try:
        # leftovers of an interrupted soak: only the soak's own database and labelled images
        out["leftovers_at_start"] = {"redis_keys": int(soak.redis.dbsize())}
        soak.redis.flushdb()
        leftover = remove_soak_images(soak.clients, None)
        out["leftovers_at_start"]["soak_images_removed"] = leftover["removed"]

        out["workers_ready_s"] = round(soak.start_workers(), 2)
        print(f"soak: workers up in {out['workers_ready_s']} s ({', '.join(w.host_id for w in soak.workers)})",
              flush=True)
        memory = MemoryLog(soak.workers, lambda: redis_connections(soak.redis, soak.workers))
        rng = random.Random(args.seed)
        plan = make_plan(args.builds, args.distinct, args.push_every, rng)
        paths = write_contexts(scratch / "contexts", soak.run_id, min(args.distinct, args.builds))
        out["redis_before"] = redis_snapshot(soak.redis, soak.run_id)
        memory.sample("start")

        monitor = TestRunMonitor()
        monitor.scan()
        already = dict(monitor.seen)
        watch = EngineWatch(soak.engine_urls, soak.run_id)
        watch.start()
        try:
            timing = soak.run_requests(plan, paths, memory, monitor)
        finally:
            memory.sample("end")
            monitor.scan()
            engine_builds = watch.stop()
        out["test_runs_seen"] = {"before": already, "during": {
            str(pid): command for pid, command in monitor.seen.items() if pid not in already}}
        out.update(timing)

        tally = soak.tally
        results = tally.results
        outcomes = Counter(r["cache"] for r in results)
        images_per_context: dict[int, set[str]] = defaultdict(set)
        hosts_per_context: dict[int, set[str]] = defaultdict(set)
        for record in results:
            images_per_context[record["context"]].add(record["image_id"])
            hosts_per_context[record["context"]].add(record["host"])
        failures = tally.errors + tally.push_errors
        out["builds_requested"] = len(plan)
        out["builds_answered"] = tally.answered
        out["builds_succeeded"] = len(results)
        out["builds_not_sent"] = tally.not_sent
        out["distinct_contexts"] = len({r.context for r in plan})
        out["distinct_requests"] = len({(r.context, r.tag) for r in plan})
        out["failures"] = {
            "count": len(failures) + tally.not_sent,
            "builds": len(tally.errors), "pushes": len(tally.push_errors), "not_sent": tally.not_sent,
            "first": [f"#{e['index']} {e['tag']}: {e['error']}" for e in failures[:FIRST_ERRORS]],
            "error_types": dict(Counter(e["error"].split(":", 1)[0] for e in failures)),
        }
        out["outcomes"] = {source: outcomes.get(source, 0) for source in ("built", "joined", "hit")} | {
            k: v for k, v in outcomes.items() if k not in ("built", "joined", "hit")}
        out["answers_by_host"] = dict(Counter(r["host"] for r in results))
        out["built_by_host"] = dict(Counter(r["host"] for r in results if r["cache"] == "built"))
        out["latency_s"] = _percentiles([r["latency_s"] for r in results])
        out["latency_by_outcome_s"] = {
            source: _percentiles([r["latency_s"] for r in results if r["cache"] == source]) for source in outcomes}
        out["distinct_image_ids"] = len({r["image_id"] for r in results})
        out["contexts_with_several_images"] = sorted(c for c, ids in images_per_context.items() if len(ids) > 1)
        out["contexts_on_several_hosts"] = sorted(c for c, hs in hosts_per_context.items() if len(hs) > 1)
        # an answer labelled "joined" for a request sent after its content's build had been answered:
        # there was no running build to join (the tags were applied to a cached image: a hit)
        first_built: dict[int, float] = {}
        for record in results:
            if record["cache"] == "built":
                first_built[record["context"]] = min(first_built.get(record["context"], 1e18), record["answered_at"])
        late_joins = [r for r in results if r["cache"] == "joined" and r["sent_at"] > first_built.get(r["context"], 1e18)]
        out["joined_sent_after_build_answered"] = {
            "count": len(late_joins),
            "examples": [f"#{r['index']} {r['tag']}" for r in late_joins[:5]],
            "same_tag_as_an_earlier_answer": sum(
                any(o["tag"] == r["tag"] and o["answered_at"] < r["sent_at"] for o in results) for r in late_joins),
        }
        pushes = tally.pushes
        out["pushes"] = {"requested": sum(r.push for r in plan[: tally.next_index]), "ok": len(pushes),
                         "failed": len(tally.push_errors), "outcomes": dict(Counter(p["cache"] for p in pushes)),
                         "latency_s": _percentiles([p["latency_s"] for p in pushes]),
                         "pushed_from_builder": sum(p["host"] == p["built_on"] for p in pushes)}

        out["engine_builds"] = engine_builds
        out["tags"] = soak.verify_tags()
        out["redis_after"] = redis_snapshot(soak.redis, soak.run_id)
        out["redis_pubsub_after"] = pubsub_clients(soak.redis)
        out["memory"] = memory.summary()
        out["worker_log_warnings"] = _log_findings(soak.workers)
        t0 = min((r["sent_at"] for r in results), default=0.0)
        out["requests"] = [
            {**{k: v for k, v in r.items() if k not in ("sent_at", "answered_at")},
             "sent_s": round(r["sent_at"] - t0, 3), "answered_s": round(r["answered_at"] - t0, 3)}
            for r in sorted(results, key=lambda r: r["index"])]
    except BaseException:
        for worker in soak.workers:
            print(f"--- worker {worker.host_id} log tail\n{worker.log_tail()}", file=sys.stderr)
        raise
    finally:
        out["cleanup"] = soak.cleanup()
        logs = harness.farm_dir() / "soak-logs" / soak.run_id
        try:
            logs.mkdir(parents=True, exist_ok=True)
            for worker in soak.workers:
                if worker.log_path.exists():
                    shutil.copy(worker.log_path, logs / worker.log_path.name)
        except OSError as exc:
            print(f"soak: could not keep the worker logs in {logs}: {exc}", file=sys.stderr)
        shutil.rmtree(scratch, ignore_errors=True)
        out["cleanup"]["temp_dir_left"] = scratch.exists()
        out["whole_run_s"] = round(time.monotonic() - began, 1)
    out["checks"] = checks(out, args)
    out["passed"] = all(check["ok"] for check in out["checks"].values())
    if out["passed"] and not args.keep_logs:
        shutil.rmtree(logs, ignore_errors=True)
    else:
        out["worker_logs"] = str(logs)
    return out


def _log_findings(workers: list[harness.BenchWorker]) -> dict[str, Any]:
    """ERROR/WARNING/Traceback lines in the worker logs (first few of each worker)."""
    found: dict[str, Any] = {}
    for worker in workers:
        try:
            lines = worker.log_path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        bad = [line for line in lines if re.search(r"\b(ERROR|WARNING|CRITICAL)\b|Traceback", line)]
        found[worker.host_id] = {"count": len(bad), "first": [line[:300] for line in bad[:8]]}
    return found


def checks(out: dict[str, Any], args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    def check(ok: bool, detail: Any) -> dict[str, Any]:
        return {"ok": bool(ok), "detail": detail}

    result: dict[str, dict[str, Any]] = {}
    if "builds_requested" not in out:
        return {"run completed": check(False, "the run stopped before its figures were taken")}
    outcomes = out["outcomes"]
    engine_total = out["engine_builds"]["total"]
    seen = out.get("test_runs_seen", {})
    result["no test run sharing the engines"] = check(
        not seen.get("before") and not seen.get("during"), seen)
    result["no failures"] = check(out["failures"]["count"] == 0, out["failures"]["count"])
    result["every request answered"] = check(
        out["builds_succeeded"] == out["builds_requested"], f"{out['builds_succeeded']}/{out['builds_requested']}")
    result["wall within budget"] = check(out["wall_s"] <= args.max_wall, f"{out['wall_s']} s <= {args.max_wall:g} s")
    engine = out["engine_builds"]
    result["one engine build per distinct context"] = check(
        engine_total == out["distinct_contexts"] == engine["contexts_built"]
        and not engine["contexts_built_more_than_once"] and not engine["stream_errors"],
        f"engine RUN starts {engine_total} for {engine['contexts_built']} contexts (distinct contexts "
        f"{out['distinct_contexts']}), built more than once: {engine['contexts_built_more_than_once']}, "
        f"event stream errors: {engine['stream_errors']}")
    result["'built' answers match engine builds"] = check(
        outcomes.get("built", 0) == engine_total, f"built {outcomes.get('built', 0)}, engine {engine_total}")
    result["one image per context"] = check(
        not out["contexts_with_several_images"] and out["distinct_image_ids"] == out["distinct_contexts"],
        f"{out['distinct_image_ids']} image ids for {out['distinct_contexts']} contexts; "
        f"several: {out['contexts_with_several_images'][:10]}")
    result["tags where the answers say"] = check(
        not out["tags"]["mismatches"], f"{out['tags']['references_checked']} references, "
        f"{len(out['tags']['mismatches'])} wrong: {out['tags']['mismatches'][:5]}")
    after = out["redis_after"]
    result["every dockyard-soak: key has a TTL"] = check(
        not after["soak_keys_without_ttl"], after["soak_keys_without_ttl"][:10])
    result["no unexpected key without TTL"] = check(
        not after["unexpected_no_ttl"], [(k["key"], k["class"], k["length"]) for k in after["unexpected_no_ttl"]][:10])
    ratios = {name: w["ratio_end_over_start"] for name, w in out["memory"]["per_worker"].items()}
    result["worker memory end/start <= 1.5"] = check(
        all(r is not None and r <= 1.5 for r in ratios.values()), ratios)
    cleanup = out["cleanup"]
    result["cleanup left nothing"] = check(
        not any(cleanup.get("images_left", {"?": 1}).values()) and cleanup.get("redis_keys_left") == 0
        and not cleanup.get("workers_still_running") and not cleanup.get("temp_dir_left")
        and not cleanup.get("image_removal", {}).get("errors")
        and not cleanup.get("registry_manifests", {}).get("errors"),
        {k: cleanup.get(k) for k in ("images_left", "redis_keys_left", "workers_still_running", "temp_dir_left")})
    return result


# ---------------------------------------------------------------------------------------------- output


def _kb(value: int) -> str:
    return f"{value / 1024:.1f} MiB"


def print_report(out: dict[str, Any]) -> None:
    lines = ["", "=" * 78, f"dockyard soak, run {out.get('run_id')}", "=" * 78]
    if "builds_requested" in out:
        opts = out["options"]
        failures = out["failures"]
        engine = out["engine_builds"]
        lines += [
            f"builds requested            {out['builds_requested']}  ({out['distinct_contexts']} distinct contexts, "
            f"{out['distinct_requests']} distinct context+tag, {opts['clients']} client threads, "
            f"2 workers x concurrency {opts['concurrency']})",
            f"answered ok                 {out['builds_succeeded']}   not sent {out['builds_not_sent']}",
            f"failures                    {failures['count']}  (builds {failures['builds']}, pushes "
            f"{failures['pushes']}, not sent {failures['not_sent']})",
        ]
        lines += [f"    {line}" for line in failures["first"]]
        lines += [
            f"outcomes by cache source    " + "  ".join(f"{k} {v}" for k, v in out["outcomes"].items()),
            f"  'joined' answers to requests sent after their content's build was answered: "
            f"{out['joined_sent_after_build_answered']}",
            f"answers by host             {out['answers_by_host']}   'built' by host {out['built_by_host']}",
            f"wall time                   {out['wall_s']:.1f} s  (budget {opts['max_wall']:g} s; "
            f"workers ready in {out['workers_ready_s']} s; whole run {out['whole_run_s']} s)",
            f"request latency (s)         {out['latency_s']}",
            f"engine builds (RUN starts)  {engine['total']}  per engine {engine['per_engine']}, contexts built "
            f"{engine['contexts_built']}, runs per context {engine['runs_per_context_histogram']}",
            f"test runs seen on the host  {out['test_runs_seen']}",
            f"distinct image ids          {out['distinct_image_ids']}   contexts with several images "
            f"{len(out['contexts_with_several_images'])}, on several hosts {len(out['contexts_on_several_hosts'])}",
            f"tags verified on engines    {out['tags']['references_checked']} references, "
            f"{len(out['tags']['mismatches'])} wrong",
            f"pushes                      {out['pushes']['ok']}/{out['pushes']['requested']} ok, outcomes "
            f"{out['pushes']['outcomes']}, latency {out['pushes']['latency_s']}",
        ]
        for when in ("before", "after"):
            snap = out[f"redis_{when}"]
            lines.append(f"redis keys {when:<6}           {snap['total']} total, {snap['no_ttl']} without TTL, "
                         f"{snap['soak_keys']} dockyard-soak:* ({len(snap['soak_keys_without_ttl'])} without TTL), "
                         f"server used_memory {snap['used_memory_bytes'] / 2**20:.1f} MiB")
        lines.append("  keys without TTL after:")
        for entry in out["redis_after"]["no_ttl_keys"]:
            lines.append(f"    {entry['key']!r:<60} {entry['type']:<5} len {entry['length']}  [{entry['class']}]")
        lines.append("  keys after, by pattern: " + ", ".join(
            f"{p} {n}" for p, n in list(out["redis_after"]["by_pattern"].items())[:14]))
        lines.append(f"  pub/sub clients on the db after: {out['redis_pubsub_after']}")
        lines.append("worker memory (VmRSS, main + pool children)")
        for name, w in out["memory"]["per_worker"].items():
            lines.append(f"    {name:<24} start {_kb(w['start_kb'])}  mid {_kb(w['mid_kb'])}  end {_kb(w['end_kb'])}  "
                         f"peak {_kb(w['peak_kb'])}  end/start {w['ratio_end_over_start']}  "
                         f"end/mid {w['ratio_end_over_mid']}  processes {w['processes']}")
        lines.append(f"soak client process RSS {out['memory']['client_kb']} kB")
        lines.append(f"redis connections by holder {out['memory']['redis_connections']}")
        for name, logs in out.get("worker_log_warnings", {}).items():
            lines.append(f"worker log {name}: {logs['count']} WARNING/ERROR lines" +
                         "".join(f"\n    {line}" for line in logs["first"][:4]))
    lines.append(f"cleanup                     {json.dumps(out.get('cleanup'), default=str)}")
    lines.append("checks")
    for name, check in out.get("checks", {}).items():
        lines.append(f"    {'ok  ' if check['ok'] else 'FAIL'} {name}: {check['detail']}")
    if out.get("worker_logs"):
        lines.append(f"worker logs kept in {out['worker_logs']}")
    lines.append(f"soak {'PASSED' if out.get('passed') else 'FAILED'} in {out.get('whole_run_s')} s")
    print("\n".join(lines), flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--builds", type=int, default=500, help="build requests (default 500)")
    parser.add_argument("--distinct", type=int, default=150, help="distinct contexts they are drawn from (default 150)")
    parser.add_argument("--clients", type=int, default=8, help="client threads calling tasks.client.build (default 8)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures as JSON here")
    parser.add_argument("--push-every", type=int, default=25, help="push every Nth request's result; 0: none (default 25)")
    parser.add_argument("--concurrency", type=int, default=2, help="each worker's concurrency (default 2)")
    parser.add_argument("--max-wall", type=float, default=WALL_BUDGET_S,
                        help="wall budget of the requests in s; none is sent after it (default 600)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the request plan (default: random)")
    parser.add_argument("--keep-logs", action="store_true",
                        help="keep the worker logs (in <farm dir>/soak-logs/<run>) even when the soak passes")
    parser.add_argument("--redis-db", type=int, default=SOAK_REDIS_DB, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.builds < 1 or args.distinct < 1 or args.clients < 1:
        parser.error("--builds, --distinct and --clients must be at least 1")
    if args.seed is None:
        args.seed = random.randrange(1 << 30)
    return args


def _single_soak() -> Any:
    """An exclusive lock in the farm dir: a soak clears database 10 and every soak-labelled image
    when it starts, so a second soak at the same time would destroy the first one's work."""
    import fcntl

    path = harness.farm_dir() / "soak.lock"
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise SystemExit(f"another soak is running (it holds {path})") from None
    return handle


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    lock = _single_soak()  # held until this process exits

    def interrupted(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")  # so the cleanup in run() still happens

    for each in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(each, interrupted)
    harness.setup_environment(redis_db=args.redis_db, key_prefix=SOAK_KEY_PREFIX)
    os.environ["DOCKYARD_METRICS_PORT"] = "0"  # two workers on one machine: no fixed /metrics port
    out = run(args)
    print_report(out)
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=2, default=str) + "\n")
        print(f"figures written to {args.json}")
    lock.close()
    return 0 if out["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
