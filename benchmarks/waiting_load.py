"""What waiting costs Redis: N callers wait on one running build.

    python -m benchmarks.waiting_load [--callers 100] [--build-s 10] [--json PATH]

Two workers on the farm's engines (the bench's database and prefix, as
``benchmarks.run``); one caller starts a build of ``--build-s`` seconds, then
``--callers`` threads ask for the same build with ``tasks.client.build`` and
wait. Redis' ``total_commands_processed`` is sampled while idle and during
the wait; the figures are commands per second, and how long after the
build's end the last caller was answered. Everything it made is removed.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
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


def run(callers: int, build_s: float) -> dict[str, Any]:
    harness.setup_environment()
    from config.settings import get_settings
    from tasks import client
    from tasks.keyspace import redis_for
    from workers.app import app

    settings = get_settings()
    connection = redis_for(settings)
    image = f"{harness.registry()[0]}/dockyard-bench/waiting-{uuid.uuid4().hex[:8]}"
    with harness.temp_dir("dockyard-waiting-") as scratch:
        workers = harness.bench_workers("waiting", harness.docker_hosts()[:2], scratch)
        harness.start_workers(app, workers)
        try:
            context = harness.write_context(scratch / "ctx", uuid.uuid4().hex, sleep_s=build_s)
            idle = rate(connection, 3.0)
            with ThreadPoolExecutor(callers + 1) as pool:
                first = pool.submit(client.build, image, path=str(context), tag="w", timeout_s=600)
                time.sleep(2.0)  # the build is under way
                answered: list[float] = []

                def wait() -> None:
                    client.build(image, path=str(context), tag="w", timeout_s=600)
                    answered.append(time.monotonic())

                waiting = [pool.submit(wait) for _ in range(callers)]
                time.sleep(1.0)  # every caller is waiting
                during = rate(connection, max(1.0, build_s - 5.0))
                first.result()
                built_at = time.monotonic()
                for each in waiting:
                    each.result()
            return {
                "callers": callers,
                "build_s": build_s,
                "idle_commands_per_s": round(idle, 1),
                "waiting_commands_per_s": round(during, 1),
                "extra_per_waiting_caller_per_s": round((during - idle) / callers, 2),
                "last_answer_after_first_s": round(max(answered) - built_at, 3),
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
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    figures = run(args.callers, args.build_s)
    for name, value in figures.items():
        print(f"{name:36} {value}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
