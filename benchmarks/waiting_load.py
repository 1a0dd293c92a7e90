"""What waiting costs Redis: N callers wait on one running build.

    python -m benchmarks.waiting_load [--callers 100] [--build-s 10] [--processes 1] [--json PATH]

Two workers on the farm's engines (the bench's database and prefix, as
``benchmarks.run``); one caller starts a build of ``--build-s`` seconds, then
``--callers`` threads ask for the same build with ``dockyard.tasks.client.build`` and
wait. Redis' ``total_commands_processed`` is sampled while idle and during
the wait; the figures are commands per second, and how long after the
build's end (its entry's time) the median and the last caller were answered. Everything it made is removed.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
import multiprocessing
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks import harness


def commands(connection: Any) -> int:
    return int(connection.info("stats")["total_commands_processed"])


def rate(connection: Any, seconds: float) -> float:
    """Redis commands per second over ``seconds``."""
    before, started = commands(connection), time.monotonic()
    time.sleep(seconds)
    return (commands(connection) - before) / (time.monotonic() - started)


def build_end(settings: Any, image: str, context: Path) -> float:
    """When the build's entry was stored (its owner's clock, as the answers' times)."""
    from dockyard.tasks import client
    from dockyard.tasks.cache.single_flight import build_cache
    from dockyard.tasks.keyspace import redis_for
    from dockyard.tasks.prepare import prepare_build

    spec, packed = prepare_build({"image_name": image, "path": str(context), "tag": "w"}, settings)
    packed.close()
    entry = build_cache(redis_for(settings), settings).peek(client.caller_cache_key(spec, settings) or spec.key)
    assert entry is not None, "the build's entry is stored"
    return float(entry.created_at)


def warm_up(seconds: float) -> None:
    """Import the client in a pool process, and hold it long enough that each process gets one."""
    import dockyard.tasks.client  # noqa: F401

    time.sleep(seconds)


def blocked_clients(connection: Any, at_least: int, *, deadline_s: float) -> int:
    """Wait until ``at_least`` clients block on Redis (a process's callers of one key share one blocked
    reader), then one more second for the rest of the callers to join them; how many block then."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline and int(connection.info("clients")["blocked_clients"]) < at_least:
        time.sleep(0.1)
    time.sleep(1.0)
    return int(connection.info("clients")["blocked_clients"])


def wait_in_threads(image: str, context: str, callers: int) -> list[float]:
    """In a process of its own: ``callers`` threads ask for the build; when each was answered."""
    from dockyard.tasks import client

    def wait() -> float:
        client.build(image, path=context, tag="w", timeout_s=600)
        return time.time()

    with ThreadPoolExecutor(callers) as pool:
        return list(pool.map(lambda _: wait(), range(callers)))


def run(callers: int, build_s: float, processes: int = 1) -> dict[str, Any]:
    harness.setup_environment()
    from dockyard.config.settings import get_settings
    from dockyard.tasks import client
    from dockyard.tasks.keyspace import redis_for
    from dockyard.workers.app import app

    settings = get_settings()
    connection = redis_for(settings)
    image = f"{harness.registry()[0]}/dockyard-bench/waiting-{uuid.uuid4().hex[:8]}"
    with harness.temp_dir("dockyard-waiting-") as scratch:
        workers = harness.bench_workers("waiting", harness.docker_hosts()[:2], scratch)
        harness.start_workers(app, workers)
        try:
            context = harness.write_context(scratch / "ctx", uuid.uuid4().hex, sleep_s=build_s)
            idle = rate(connection, 3.0)
            spawn = multiprocessing.get_context("spawn")
            with ThreadPoolExecutor(1) as starter, ProcessPoolExecutor(processes, mp_context=spawn) as pool:
                list(pool.map(warm_up, [1.0] * processes))  # every process started and imported
                first = starter.submit(client.build, image, path=str(context), tag="w", timeout_s=600)
                time.sleep(2.0)  # the build is under way
                shares = [callers // processes + (1 if index < callers % processes else 0) for index in range(processes)]
                waiting = [pool.submit(wait_in_threads, image, str(context), share) for share in shares]
                blocked = blocked_clients(connection, processes, deadline_s=build_s - 5.0)
                during = rate(connection, 2.0)
                first.result()
                answered = [at for each in waiting for at in each.result()]
            built_at = build_end(settings, image, context)
            after = sorted(at - built_at for at in answered)
            return {
                "callers": callers,
                "processes": processes,
                "build_s": build_s,
                "idle_commands_per_s": round(idle, 1),
                "waiting_commands_per_s": round(during, 1),
                "blocked_redis_clients_while_waiting": blocked,
                "extra_per_waiting_caller_per_s": round((during - idle) / callers, 2),
                "answered": len(answered),
                "median_answer_after_build_end_s": round(after[len(after) // 2], 3),
                "last_answer_after_build_end_s": round(after[-1], 3),
            }
        finally:
            for worker in workers:
                worker.stop()
            harness.remove_bench_images([harness.engine(url) for url in harness.docker_hosts()[:2]], [image])
            harness.delete_bench_keys()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--callers", type=int, default=100)
    parser.add_argument("--build-s", type=float, default=10.0)
    parser.add_argument("--processes", type=int, default=1, help="the callers' threads spread over this many processes")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    figures = run(args.callers, args.build_s, args.processes)
    for name, value in figures.items():
        print(f"{name:36} {value}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
