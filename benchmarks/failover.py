"""Redis fails over during a build run: the master is SIGKILLed, every build must still be answered, none twice.

``bash benchmarks/failover.sh [--builds 200] [--keys 100] [--json PATH]`` (separate from the tests;
``tests/farm/test_sentinel.py`` runs a smaller one). It provisions the Sentinel setup
(``workers/provision_sentinel.sh``), starts one worker per engine (two hosts) on its ``sentinel://``
URLs, sends ``--builds`` requests over ``--keys`` distinct contexts from client threads, kills the
master once ``--kill-after`` of them are answered, and counts the RUN steps each context got from the
engines' own live events. Afterwards it restarts the killed Redis as a replica, stops the workers,
removes the run's images and empties its database. The last line on stdout is the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import sys
import threading
import time
import traceback
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks import harness
from benchmarks.failover_sentinel import SentinelSetup, provision

RUN_LABEL = "io.dockyard.failover.run"  # on every image and RUN container of one run; value: the run id
KEY_LABEL = "io.dockyard.failover.key"  # which of the run's contexts (keys) a RUN container builds
CALL_TIMEOUT_S = 600.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="benchmarks.failover", description=__doc__.splitlines()[0])
    parser.add_argument("--builds", type=int, default=200, help="build requests (default 200)")
    parser.add_argument("--keys", type=int, default=100, help="distinct contexts among them (default 100)")
    parser.add_argument("--kill-after", type=float, default=0.3, help="fraction answered before the kill")
    parser.add_argument("--clients", type=int, default=8, help="client threads")
    parser.add_argument("--sleep", type=float, default=1.0, help="seconds each build's RUN step sleeps")
    parser.add_argument("--db", type=int, default=harness.BENCH_REDIS_DB, help="database on the sentinels' master")
    parser.add_argument("--key-prefix", default=harness.BENCH_KEY_PREFIX)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    return parser.parse_args(argv)


class Killer:
    """Kills the master once enough builds are answered, and times the failover."""

    def __init__(self, setup: SentinelSetup, after: int) -> None:
        self.setup, self.after = setup, after
        self.figures: dict[str, Any] = {}
        self.answered = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def answer(self) -> None:
        with self._lock:
            self.answered += 1
            if self.answered == self.after and self._thread is None:
                self._thread = threading.Thread(target=self._kill, name="failover-kill", daemon=True)
                self._thread.start()

    def _kill(self) -> None:
        killed_at = time.monotonic()
        port, pid = self.setup.kill_master()
        self.figures.update(killed_port=port, killed_pid=pid, answered_at_kill=self.answered)
        try:
            new = self.setup.wait_new_master(port)
            self.figures.update(new_master_port=new, kill_to_new_master_s=round(time.monotonic() - killed_at, 2))
        except TimeoutError as exc:
            self.figures["failover_error"] = str(exc)

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join(timeout=90)


class Resends(logging.Handler):
    """Counts the tasks callers sent again because the broker failed over before they answered."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += "failed over" in record.getMessage()


def write_contexts(scratch: Path, run_id: str, keys: int, sleep_s: float) -> list[Path]:
    """One context per key: the farm's base image, the run's and the key's labels, a RUN step unique to it."""
    paths = []
    for number in range(keys):
        path = scratch / f"ctx-{number}"
        path.mkdir(parents=True)
        (path / "Dockerfile").write_text(
            f"FROM {harness.base_image()}\nLABEL {RUN_LABEL}={run_id}\nLABEL {KEY_LABEL}={number}\n"
            f"RUN sleep {sleep_s:g} && echo {uuid.uuid4()} > /built\n"
        )
        paths.append(path)
    return paths


def send(args: argparse.Namespace, repository: str, paths: list[Path], killer: Killer) -> list[dict[str, Any]]:
    """Every request from ``--clients`` threads (request i builds context i mod keys); one record each."""
    from dockyard.tasks.client import build

    def one(index: int) -> dict[str, Any]:
        began = time.monotonic()
        record: dict[str, Any] = {"index": index, "key": index % len(paths)}
        try:
            result = build(repository, path=str(paths[index % len(paths)]), tag=f"b{index}", timeout_s=CALL_TIMEOUT_S)
            record.update(cache=result.get("cache"), host=result.get("host"), image_id=result.get("image_id"))
        except Exception as exc:  # noqa: BLE001 - every failure is a figure
            record["error"] = f"{type(exc).__name__}: {exc}"[:300]
            record["where"] = [f"{f.filename.rsplit('/', 2)[-1]}:{f.lineno} {f.name}" for f in traceback.extract_tb(exc.__traceback__)][-12:]
        record["latency_s"] = round(time.monotonic() - began, 3)
        killer.answer()
        return record

    with ThreadPoolExecutor(max_workers=args.clients) as pool:
        return list(pool.map(one, range(args.builds)))


def summarize(records: list[dict[str, Any]], engines: dict[str, Any], keys: int) -> dict[str, Any]:
    """Answered, failed, outcomes, and the engines' builds per key."""
    failed = [r for r in records if "error" in r]
    per_key = Counter({int(k): len(v) for k, v in engines.get("by_context", {}).items()})
    images = {}
    for record in records:
        if "error" not in record:
            images.setdefault(record["key"], set()).add(record["image_id"])
    return {
        "requested": len(records), "answered": len(records) - len(failed), "failed": len(failed),
        "errors": [r["error"] for r in failed][:10],
        "error_traces": [r["where"] for r in failed][:3],
        "outcomes": dict(Counter(r.get("cache") for r in records if "error" not in r)),
        "per_host": dict(Counter(r.get("host") for r in records if "error" not in r)),
        "keys": keys, "keys_built": len(per_key), "engine_builds": sum(per_key.values()),
        "max_builds_per_key": max(per_key.values(), default=0),
        "keys_built_more_than_once": sorted(k for k, n in per_key.items() if n > 1),
        "keys_with_several_image_ids": sorted(k for k, ids in images.items() if len(ids) > 1),
        "engine_stream_errors": engines.get("stream_errors", []),
    }


def keep_logs(workers: list[Any], run_id: str) -> Path:
    """Copy the workers' logs to ``<farm dir>/failover-logs/<run>``."""
    logs = harness.farm_dir() / "failover-logs" / run_id
    logs.mkdir(parents=True, exist_ok=True)
    for worker in workers:
        if worker.log_path.exists():
            shutil.copy(worker.log_path, logs / f"{worker.host_id}.log")
    return logs


def stop_on_sigterm() -> None:
    """SIGTERM (a caller's or a test's timeout) unwinds like an error, so the workers this run started are stopped."""
    def handle(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handle)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop_on_sigterm()
    setup = provision()
    harness.setup_environment(redis_db=args.db, key_prefix=args.key_prefix)
    os.environ.update(setup.environment(args.db))
    from benchmarks.soak_events import EngineWatch
    from dockyard.config.settings import get_settings
    from dockyard.tasks.keyspace import redis_for
    from dockyard.workers.app import app

    settings = get_settings()
    connection = redis_for(settings)
    connection.flushdb()
    run_id = uuid.uuid4().hex[:10]
    engine_urls = harness.docker_hosts()[:2]
    repository = f"{harness.registry()[0]}/{harness.BENCH_REPOSITORY}/failover-{run_id}"
    figures: dict[str, Any] = {"run": run_id, "builds": args.builds, "keys": args.keys}
    with harness.temp_dir("dockyard-failover-") as scratch:
        paths = write_contexts(scratch / "contexts", run_id, args.keys, args.sleep)
        workers = harness.bench_workers(f"failover-{run_id}", engine_urls, scratch)
        watch = EngineWatch(engine_urls, run_id, run_label=RUN_LABEL, context_label=KEY_LABEL)
        killer = Killer(setup, max(1, int(args.builds * args.kill_after)))
        try:
            harness.start_workers(app, workers, timeout_s=180)
            watch.start()
            began = time.monotonic()
            resends = Resends()
            logging.getLogger("dockyard.client").addHandler(resends)
            records = send(args, repository, paths, killer)
            figures["resent_after_failover"] = resends.count
            figures["wall_s"] = round(time.monotonic() - began, 2)
            killer.join()
            engines = watch.stop()
            engines["by_context"] = {str(k): v for k, v in watch.by_context.items()}
            figures.update(summarize(records, engines, args.keys), **killer.figures)
            figures["workers_alive_at_end"] = [w.host_id for w in workers if w.running()]
        except BaseException:
            harness.print_log_tails(workers)
            raise
        finally:
            for worker in workers:
                worker.stop()
            figures["worker_logs"] = str(keep_logs(workers, run_id))
            provision()  # the killed Redis comes back as a replica of the new master
            clients = [harness.engine(url, logged_in=False) for url in engine_urls]
            figures["images_removed"] = harness.remove_images(clients, label=RUN_LABEL, repositories=[repository])["removed"]
            connection.flushdb()
    print(json.dumps(figures), flush=True)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
