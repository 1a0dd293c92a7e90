"""Following the engines' container events of a soak run, live, to count the builds each engine ran."""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from typing import Any

from benchmarks.soak_plan import CONTEXT_LABEL, SOAK_LABEL


class EngineWatch:
    """Counts, live, the container events carrying the run's label on each engine (the soak's labels
    unless others are given).

    Live, because an engine replays only its last 256 events (of every kind) to
    a ``since`` query, far fewer than a soak makes: counting afterwards undercounts.
    RUN-step containers are the ones started; their ``io.dockyard.soak.context``
    label tells which context was built.
    """

    def __init__(
        self, urls: list[str], run_id: str, *, run_label: str = SOAK_LABEL, context_label: str = CONTEXT_LABEL
    ) -> None:
        import docker

        self.run_id = run_id
        self.run_label = run_label
        self.context_label = context_label
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
        """Follow each engine's container events carrying the run's label, one thread per engine."""
        for number, client in enumerate(self.clients, start=1):
            stream = client.events(decode=True, filters={
                "type": "container", "event": ["create", "start"], "label": f"{self.run_label}={self.run_id}"})
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
                        context = attributes.get(self.context_label)
                        if context is not None and str(context).isdigit():
                            self.by_context[int(context)].append(engine)
        except Exception as exc:  # noqa: BLE001 - closing the stream ends the loop this way too
            if not self._stopping.is_set():
                self.errors.append(f"{engine}: {type(exc).__name__}: {exc}")

    def stop(self, settle_s: float = 1.5) -> dict[str, Any]:
        """Close the streams after ``settle_s``; return the counts (``figures``)."""
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
        return self.figures()

    def figures(self) -> dict[str, Any]:
        """RUN starts in all and per engine, creates, contexts built (more than once), stream errors."""
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

