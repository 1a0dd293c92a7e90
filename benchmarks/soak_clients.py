"""The soak's clients: threads sending the plan's requests through ``dockyard.tasks.client``, and their tally.

``send_requests`` runs ``--clients`` threads until the plan is sent (or the
wall budget is spent, or a worker died) and supervises them meanwhile:
memory samples, test-run scans, a progress line every few seconds.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.soak_plan import CALL_TIMEOUT_S, MEMORY_SAMPLE_S, PROGRESS_S, Request
from benchmarks.soak_probes import MemoryLog, TestRunMonitor
from dockyard.workers.launcher import WorkerProcess

GIVE_UP_AFTER_S = CALL_TIMEOUT_S + 30  # past the wall budget: threads still busy are abandoned
TICK_S = 0.5  # how often the supervisor looks


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

    def take(self, plan: Sequence[Request], deadline: float) -> Request | None:
        """The next request to send, or None when the plan is done (or the wall budget spent: the rest is not sent)."""
        with self.lock:
            if self.next_index >= len(plan):
                return None
            if time.monotonic() > deadline:
                self.not_sent += len(plan) - self.next_index
                self.next_index = len(plan)
                return None
            request = plan[self.next_index]
            self.next_index += 1
            return request

    def progress(self) -> tuple[int, int, Counter[str]]:
        """Answered so far, failures so far, outcomes by cache source."""
        with self.lock:
            return (self.answered, len(self.errors) + len(self.push_errors),
                    Counter(r["cache"] for r in self.results))

    @property
    def pushed_digests(self) -> list[str]:
        with self.lock:
            return [str(p["digest"]) for p in self.pushes if p.get("digest")]


class Clients:
    """The client threads' work: build each request taken from the plan, push when it says so."""

    def __init__(self, repository: str, plan: Sequence[Request], paths: Sequence[Path], deadline: float) -> None:
        self.repository = repository
        self.plan = plan
        self.paths = paths
        self.deadline = deadline
        self.tally = Tally()
        self.stop = threading.Event()

    def thread(self) -> None:
        """One client thread: take, build, maybe push, until the plan is done or ``stop`` is set."""
        while not self.stop.is_set():
            request = self.tally.take(self.plan, self.deadline)
            if request is None:
                return
            record = self.build_one(request)
            if record is not None and request.push:
                self.push_one(request, record)

    def build_one(self, request: Request) -> dict[str, Any] | None:
        """Build one request; record its answer (or its error)."""
        from dockyard.tasks.client import build

        began = time.monotonic()
        try:
            result = build(self.repository, path=str(self.paths[request.context]), tag=request.tag,
                           timeout_s=CALL_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - every failure is reported
            with self.tally.lock:
                self.tally.answered += 1
                self.tally.errors.append({"index": request.index, "tag": request.tag,
                                          "error": f"{type(exc).__name__}: {exc}"[:500],
                                          "after_s": round(time.monotonic() - began, 3)})
            return None
        record = {
            "index": request.index, "context": request.context, "tag": request.tag,
            "cache": result.get("cache"), "host": result.get("host"), "image_id": result.get("image_id"),
            "image": result.get("image"), "latency_s": round(time.monotonic() - began, 4),
            "sent_at": began, "answered_at": time.monotonic(),
        }
        with self.tally.lock:
            self.tally.answered += 1
            self.tally.results.append(record)
        return record

    def push_one(self, request: Request, built: dict[str, Any]) -> None:
        """Push the image of one answered request; record the push (or its error)."""
        from dockyard.tasks.client import push

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


class Supervisor:
    """Watches the run while the client threads work: samples, scans, progress, dead workers, give-up."""

    def __init__(
        self, clients: Clients, workers: Sequence[WorkerProcess], memory: MemoryLog, monitor: TestRunMonitor,
        started: float,
    ) -> None:
        self.clients = clients
        self.workers = workers
        self.memory = memory
        self.monitor = monitor
        self.started = started
        self.next_sample = started + MEMORY_SAMPLE_S
        self.next_progress = started + PROGRESS_S
        self.dead: list[str] = []

    def tick(self, now: float) -> bool:
        """One look; False when the supervisor gives up on the threads."""
        answered, failures, outcomes = self.clients.tally.progress()
        self.sample(now, answered)
        if now >= self.next_progress:
            self.report(now, answered, failures, outcomes)
            self.next_progress = now + PROGRESS_S
        self.notice_dead_workers()
        if now > self.clients.deadline + GIVE_UP_AFTER_S:
            print("soak: client threads still busy long after the wall budget: giving up on them",
                  file=sys.stderr, flush=True)
            self.clients.stop.set()
            return False
        return True

    def sample(self, now: float, answered: int) -> None:
        """The mid-way memory mark once half the plan is answered; otherwise a sample every few seconds."""
        if "mid" not in self.memory.marks and answered >= len(self.clients.plan) // 2:
            self.memory.sample("mid")
        elif now >= self.next_sample:
            self.memory.sample()
            self.monitor.scan()
            self.next_sample = now + MEMORY_SAMPLE_S

    def report(self, now: float, answered: int, failures: int, outcomes: Counter[str]) -> None:
        rss = "/".join(f"{w['rss_kb'] / 1024:.0f}" for w in self.memory.samples[-1]["workers"].values())
        print(f"soak: {answered}/{len(self.clients.plan)} answered after {now - self.started:.0f} s, "
              f"{failures} failures, outcomes {dict(outcomes)}, worker RSS MiB {rss}", flush=True)

    def notice_dead_workers(self) -> None:
        """When a worker exited: no new requests (once)."""
        if self.dead:
            return
        self.dead = [w.host_id for w in self.workers if not w.running()]
        if self.dead:
            print(f"soak: worker(s) {self.dead} exited: no new requests", file=sys.stderr, flush=True)
            self.clients.stop.set()


def send_requests(
    clients: Clients, threads: int, workers: Sequence[WorkerProcess], memory: MemoryLog, monitor: TestRunMonitor
) -> dict[str, Any]:
    """Run ``threads`` client threads to the end of the plan, supervised; return the timing figures."""
    started = time.monotonic()
    running = [threading.Thread(target=clients.thread, name=f"soak-client-{n}", daemon=True) for n in range(threads)]
    for thread in running:
        thread.start()
    supervisor = Supervisor(clients, workers, memory, monitor, started)
    while any(thread.is_alive() for thread in running):
        time.sleep(TICK_S)
        if not supervisor.tick(time.monotonic()):
            break
    wall = time.monotonic() - started
    last_answer = max((r["answered_at"] for r in clients.tally.results), default=started)
    return {"wall_s": round(wall, 2), "last_build_answered_s": round(last_answer - started, 2),
            "workers_died": supervisor.dead, "threads_still_running": sum(t.is_alive() for t in running)}
