"""What the soak watches on this machine: workers' memory (their process trees) and test runs.

``MemoryLog`` samples the VmRSS of each worker's main process and pool
children; ``TestRunMonitor`` notices test runs that share the engines.
"""

from __future__ import annotations

import os
import re
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dockyard.workers.launcher import WorkerProcess


def rss_kb(pid: int) -> int:
    """VmRSS of ``pid`` in kB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def descendants(pid: int) -> list[int]:
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
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def worker_memory(worker: WorkerProcess) -> dict[str, Any]:
    """VmRSS of the worker's main process plus its pool children, in kB."""
    if not worker.running():
        return {"alive": False, "rss_kb": 0, "main_kb": 0, "children_kb": 0, "processes": 0}
    pid = worker.pid
    children = descendants(pid)
    main_kb = rss_kb(pid)
    children_kb = sum(rss_kb(child) for child in children)
    return {"alive": True, "rss_kb": main_kb + children_kb, "main_kb": main_kb, "children_kb": children_kb,
            "processes": 1 + len(children)}


class MemoryLog:
    """Samples of every worker's memory: start, mid-way, end, and one every few seconds."""

    def __init__(self, workers: list[WorkerProcess], connections: Callable[[], Any] | None = None) -> None:
        self.workers = workers
        self.samples: list[dict[str, Any]] = []
        self.marks: dict[str, dict[str, Any]] = {}
        self.connections_at: dict[str, Any] = {}  # Redis connections by holder, at each mark
        self._connections = connections
        self._began = time.monotonic()

    def sample(self, mark: str | None = None) -> dict[str, Any]:
        """One sample of every worker and this process; ``mark`` names it (start, mid, end)."""
        taken = {"t_s": round(time.monotonic() - self._began, 1),
                 "workers": {w.host_id: worker_memory(w) for w in self.workers},
                 "client_kb": rss_kb(os.getpid())}
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
        """Per worker: start, mid, end and peak RSS and their ratios; the client's RSS; the series."""
        out: dict[str, Any] = {"samples": len(self.samples), "per_worker": {}}
        for worker in self.workers:
            out["per_worker"][worker.host_id] = self._worker_summary(worker.host_id)
        out["client_kb"] = {mark: taken["client_kb"] for mark, taken in self.marks.items()}
        out["redis_connections"] = self.connections_at
        out["series_kb"] = [
            [s["t_s"], *(s["workers"][w.host_id]["rss_kb"] for w in self.workers)] for s in self.samples
        ]
        return out

    def _worker_summary(self, name: str) -> dict[str, Any]:
        series = [s["workers"][name]["rss_kb"] for s in self.samples if s["workers"][name]["alive"]]
        figures = {mark: taken["workers"][name] for mark, taken in self.marks.items()}
        start = figures.get("start", {}).get("rss_kb", 0)
        mid = figures.get("mid", {}).get("rss_kb", 0)
        end = figures.get("end", {}).get("rss_kb", 0)
        return {
            "start_kb": start, "mid_kb": mid, "end_kb": end, "peak_kb": max(series, default=0),
            "processes": {mark: fig.get("processes") for mark, fig in figures.items()},
            "ratio_end_over_start": round(end / start, 3) if start else None,
            "ratio_end_over_mid": round(end / mid, 3) if mid else None,
            "detail": figures,
        }


class TestRunMonitor:
    """Notices test runs (pytest, .ci/run, workers/run.sh test) that share the engines during the soak."""

    PATTERN = re.compile(r"pytest|\.ci/run|workers/run\.sh test")

    def __init__(self) -> None:
        self.seen: dict[int, str] = {}

    def scan(self) -> None:
        """Remember every process now running whose command line is a test run."""
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) in self.seen:
                continue
            try:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                continue
            if command and self.PATTERN.search(command):
                self.seen[int(entry.name)] = command[:160]
