"""Soak: many small builds, identical and distinct, over the farm's two engines with two real workers.

    python -m benchmarks.soak [--builds 500] [--distinct 150] [--clients 8] [--json PATH]

``--builds`` requests are drawn from ``--distinct`` tiny contexts (``FROM`` the
farm's base image, ``LABEL``s naming the soak run and the context, ``COPY`` of a
small file, ``RUN echo <uuid>``) and sent by ``--clients`` threads calling
``dockyard.tasks.client.build``; tags vary a little, so some requests are "same
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
import json
import os
import random
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import IO, Any

from benchmarks import harness
from benchmarks.soak_clients import Clients, send_requests
from benchmarks.soak_events import EngineWatch
from benchmarks.soak_farm import SoakFarm
from benchmarks.soak_plan import SOAK_KEY_PREFIX, SOAK_REDIS_DB, WALL_BUDGET_S, Request, make_plan, write_contexts
from benchmarks.soak_probes import MemoryLog, TestRunMonitor
from benchmarks.soak_redis import pubsub_clients, redis_connections, redis_snapshot
from benchmarks.soak_report import checks, log_findings, print_report, request_figures, request_list


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The whole soak: set up, send the plan, take the figures, clean up (also after a failure), judge."""
    began = time.monotonic()
    out: dict[str, Any] = {"options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    with harness.temp_dir("dockyard-soak-") as scratch:
        farm = SoakFarm(args, scratch)
        _announce(farm, args, out)
        sent: list[Clients] = []  # the clients, once made: their pushes are deleted from the registry
        try:
            _soak(farm, args, out, sent)
        except BaseException:
            harness.print_log_tails(farm.workers)
            raise
        finally:
            out["cleanup"] = farm.cleanup([d for clients in sent for d in clients.tally.pushed_digests])
            logs = farm.keep_logs()
    out["cleanup"]["temp_dir_left"] = scratch.exists()
    out["whole_run_s"] = round(time.monotonic() - began, 1)
    _judge(out, args, logs)
    return out


def _announce(farm: SoakFarm, args: argparse.Namespace, out: dict[str, Any]) -> None:
    out["run_id"] = farm.run_id
    out["repository"] = farm.repository
    out["engines"] = farm.engine_urls
    print(f"soak: run {farm.run_id}: {args.builds} builds over {args.distinct} contexts, {args.clients} client "
          f"threads, workers with concurrency {args.concurrency}, Redis db {args.redis_db}", flush=True)


def _soak(farm: SoakFarm, args: argparse.Namespace, out: dict[str, Any], sent: list[Clients]) -> None:
    """Clear leftovers, start the workers, send the plan (its clients added to ``sent``), take the figures."""
    out["leftovers_at_start"] = farm.clear_leftovers()
    out["workers_ready_s"] = round(farm.start_workers(), 2)
    print(f"soak: workers up in {out['workers_ready_s']} s ({', '.join(w.host_id for w in farm.workers)})",
          flush=True)
    memory = MemoryLog(farm.workers, lambda: redis_connections(farm.redis, farm.workers))
    plan = make_plan(args.builds, args.distinct, args.push_every, random.Random(args.seed))
    paths = write_contexts(farm.scratch / "contexts", farm.run_id, min(args.distinct, args.builds))
    out["redis_before"] = redis_snapshot(farm.redis, farm.run_id)
    memory.sample("start")
    clients = Clients(farm.repository, plan, paths, deadline=time.monotonic() + args.max_wall)
    sent.append(clients)
    engine_builds = _send_watched(farm, args, clients, memory, out)
    _take_figures(farm, plan, clients, engine_builds, memory, out)


def _send_watched(
    farm: SoakFarm, args: argparse.Namespace, clients: Clients, memory: MemoryLog, out: dict[str, Any]
) -> dict[str, Any]:
    """Send the plan while watching for test runs and counting the engines' builds; return the counts."""
    monitor = TestRunMonitor()
    monitor.scan()
    already = dict(monitor.seen)
    watch = EngineWatch(farm.engine_urls, farm.run_id)
    watch.start()
    try:
        timing = send_requests(clients, args.clients, farm.workers, memory, monitor)
    finally:
        memory.sample("end")
        monitor.scan()
        engine_builds = watch.stop()
    out["test_runs_seen"] = {"before": already, "during": {
        str(pid): command for pid, command in monitor.seen.items() if pid not in already}}
    out.update(timing)
    return engine_builds


def _take_figures(
    farm: SoakFarm, plan: list[Request], clients: Clients, engine_builds: dict[str, Any], memory: MemoryLog,
    out: dict[str, Any],
) -> None:
    """The figures taken after the requests: answers, engines, tags on the engines, Redis, memory, logs."""
    out.update(request_figures(plan, clients.tally))
    out["engine_builds"] = engine_builds
    out["tags"] = farm.verify_tags(clients.tally.results)
    out["redis_after"] = redis_snapshot(farm.redis, farm.run_id)
    out["redis_pubsub_after"] = pubsub_clients(farm.redis)
    out["memory"] = memory.summary()
    out["worker_log_warnings"] = log_findings(farm.workers)
    out["requests"] = request_list(clients.tally.results)


def _judge(out: dict[str, Any], args: argparse.Namespace, logs: Path) -> None:
    """The checks and the verdict; the worker logs are kept unless the soak passed."""
    out["checks"] = checks(out, args)
    out["passed"] = all(check["ok"] for check in out["checks"].values())
    if out["passed"] and not args.keep_logs:
        shutil.rmtree(logs, ignore_errors=True)
    else:
        out["worker_logs"] = str(logs)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--builds", type=int, default=500, help="build requests (default 500)")
    parser.add_argument("--distinct", type=int, default=150, help="distinct contexts they are drawn from (default 150)")
    parser.add_argument("--clients", type=int, default=8, help="client threads calling dockyard.tasks.client.build (default 8)")
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


def _single_soak() -> IO[str]:
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
