"""The ``dockyard`` command: bring up a local farm, run a worker, build and push."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from config.settings import get_settings
from tasks.errors import DockyardError

EXAMPLE_DIR = Path(__file__).with_name("example")


def cmd_up(args: argparse.Namespace) -> int:
    """Provision the farm, start a worker, build and push the example project."""
    from workers import farm

    started = time.monotonic()
    env_file = farm.provision(hosts=args.hosts)
    settings = farm.load_farm_env(env_file)
    provisioned = time.monotonic()
    from workers.app import app

    farm.start_worker(settings, host_id=settings.host_id, docker_host=settings.docker_host)
    farm.wait_for_workers(app, [settings.host_id])
    ready = time.monotonic()

    from tasks.client import build_and_push

    registry = settings.registry_url or "127.0.0.1:5000"
    credentials = {
        "username": settings.registry_username or "",
        "password": settings.registry_password.get_secret_value() if settings.registry_password else "",
        "registry_url": registry,
    }
    job = build_and_push(
        f"{registry}/dockyard/example", credentials=credentials,
        path=str(EXAMPLE_DIR), buildargs={"BASE": settings.auto_base_image},
    ).apply_async()
    pushed = job.get(timeout=settings.task_time_limit_s)
    built = job.parent.get(timeout=5)
    done = time.monotonic()
    print(f"pushed  {pushed['image']}")
    print(f"digest  {pushed['digest']}")
    print(f"image   {built['image_id']} built on host {built['host']}")
    print(
        f"timings provision {provisioned - started:.1f} s, worker start {ready - provisioned:.1f} s, "
        f"build {built['duration_s']:.2f} s, push {pushed['duration_s']:.2f} s, "
        f"build+push round trip {done - ready:.2f} s"
    )
    print(f"stop the worker with `dockyard down`; its log is in {Path(settings.farm_dir) / 'workers'}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    """Stop the workers `dockyard up` started."""
    from workers import farm

    stopped = farm.stop_workers(get_settings())
    print("stopped " + (", ".join(stopped) if stopped else "nothing"))
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """Run a worker in the foreground for this host (its shared and host queues)."""
    import os

    if args.host_id:
        os.environ["DOCKYARD_HOST_ID"] = args.host_id  # before the settings are first read
        get_settings.cache_clear()
    from workers.worker import run_worker

    run_worker(get_settings(), concurrency=args.concurrency, loglevel=args.loglevel, extra_queues=args.queue)
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    """Build on the farm (from the cache when possible) and print the result as JSON."""
    from tasks.client import build

    params: dict[str, Any] = {"dockerfile": args.dockerfile, "path": str(Path(args.path).resolve())}
    if args.tag:
        params["tag"] = args.tag
    if args.additional_tag:
        params["additional_tags"] = args.additional_tag
    if args.build_arg:
        params["buildargs"] = dict(pair.split("=", 1) for pair in args.build_arg)
    if args.backend:
        params["build_backend"] = args.backend
    result = build(args.image_name, on_output=_to_stderr, **params)
    print(json.dumps(result, indent=2))
    return 0


def _to_stderr(text: str) -> None:
    sys.stderr.write(text)
    sys.stderr.flush()


def cmd_push(args: argparse.Namespace) -> int:
    """Push from the host holding the image and print the result as JSON."""
    from tasks.client import push

    result = push(args.image_name, tag=args.tag, additional_tags=args.additional_tag or None)
    print(json.dumps(result, indent=2))
    return 0


def cmd_hosts(args: argparse.Namespace) -> int:
    """List the build hosts that heartbeat, with their load (tasks running now)."""
    from tasks.hosts import live_hosts
    from tasks.keyspace import redis_for
    from workers.app import app

    settings = get_settings()
    active = app.control.inspect(timeout=1.0).active() or {}
    running = {node.split("@", 1)[0]: len(tasks) for node, tasks in active.items()}
    records = live_hosts(redis_for(settings), settings)
    print("HOST\tRUNNING\tCONCURRENCY\tQUEUE\tDOCKER\tMETRICS")
    for record in records:
        print(
            f"{record['host']}\t{running.get(record['host'], 0)}\t{record['concurrency']}\t"
            f"{record['queue']}\t{record['docker_host']}\t{record.get('metrics') or '-'}"
        )
    return 0


def cmd_cache_list(args: argparse.Namespace) -> int:
    """List the build cache: key, image id, host, age."""
    import time

    from tasks.cache import SingleFlight
    from tasks.keyspace import key, redis_for

    settings = get_settings()
    connection = redis_for(settings)
    flight = SingleFlight(connection, settings, namespace="build")
    print("KEY\tIMAGE ID\tHOST\tAGE (s)")
    prefix = key(settings, "build", "")
    for name in sorted(connection.scan_iter(match=prefix + "*", count=1000)):
        cache_key = name.decode().removeprefix(prefix)
        entry = flight.lookup(cache_key)
        if entry is not None:
            age = time.time() - entry["created_at"]
            print(f"{cache_key}\t{entry['value']['image_id']}\t{entry['host']}\t{age:.0f}")
    return 0


def cmd_cache_clear(args: argparse.Namespace) -> int:
    """Remove build cache entries (the given keys, or all with --all)."""
    from tasks.cache import SingleFlight
    from tasks.keyspace import key, redis_for

    settings = get_settings()
    connection = redis_for(settings)
    if not args.all and not args.keys:
        print("dockyard: give cache keys to clear, or --all", file=sys.stderr)
        return 2
    flight = SingleFlight(connection, settings, namespace="build")
    prefix = key(settings, "build", "")
    names = (
        [name.decode() for name in connection.scan_iter(match=prefix + "*", count=1000)]
        if args.all else [flight.entry_key(k) for k in args.keys]
    )
    removed = int(connection.delete(*names)) if names else 0
    print(f"cleared {removed} cache entr{'y' if removed == 1 else 'ies'}")
    return 0 if args.all or removed == len(names) else 1


def cmd_status(args: argparse.Namespace) -> int:
    """Show a task's state, and its result or error."""
    from celery.result import AsyncResult

    from workers.app import app

    result = AsyncResult(args.task_id, app=app)
    print(f"state\t{result.state}")
    if result.state == "FAILURE":
        print(f"error\t{type(result.result).__name__}: {result.result}")
        return 1
    if result.info is not None:
        print("result\t" + json.dumps(result.info, default=str))
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="dockyard", description=__doc__)
    sub = root.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help=cmd_up.__doc__)
    up.add_argument("--hosts", type=int, default=2, help="Docker engines to provision (default 2)")
    up.set_defaults(run=cmd_up)

    sub.add_parser("down", help=cmd_down.__doc__).set_defaults(run=cmd_down)
    sub.add_parser("hosts", help=cmd_hosts.__doc__).set_defaults(run=cmd_hosts)

    cache = sub.add_parser("cache", help="List or clear the build cache").add_subparsers(dest="cache_command", required=True)
    cache.add_parser("list", help=cmd_cache_list.__doc__).set_defaults(run=cmd_cache_list)
    clear = cache.add_parser("clear", help=cmd_cache_clear.__doc__)
    clear.add_argument("keys", nargs="*", help="cache keys, as `dockyard cache list` shows them")
    clear.add_argument("--all", action="store_true", help="clear every build cache entry")
    clear.set_defaults(run=cmd_cache_clear)

    status = sub.add_parser("status", help=cmd_status.__doc__)
    status.add_argument("task_id")
    status.set_defaults(run=cmd_status)

    worker = sub.add_parser("worker", help=cmd_worker.__doc__)
    worker.add_argument("--concurrency", type=int, default=None, help="builds at once (default DOCKYARD_WORKER_CONCURRENCY)")
    worker.add_argument("--host-id", default=None, help="this host's id (default DOCKYARD_HOST_ID or the hostname)")
    worker.add_argument("--queue", action="append", default=[], help="an extra queue to consume (repeatable)")
    worker.add_argument("--loglevel", default="INFO")
    worker.set_defaults(run=cmd_worker)

    build = sub.add_parser("build", help=cmd_build.__doc__)
    build.add_argument("image_name")
    build.add_argument("--path", default=".", help="build context (default .)")
    build.add_argument("--dockerfile", default="Dockerfile", help='Dockerfile, or "auto"')
    build.add_argument("--tag", default=None, help="default: a UTC timestamp")
    build.add_argument("--additional-tag", action="append", default=[])
    build.add_argument("--build-arg", action="append", default=[], metavar="KEY=VALUE")
    build.add_argument("--backend", choices=["docker-py", "buildx"], default=None, help="default docker-py")
    build.set_defaults(run=cmd_build)

    push = sub.add_parser("push", help=cmd_push.__doc__)
    push.add_argument("image_name")
    push.add_argument("--tag", default=None)
    push.add_argument("--additional-tag", action="append", default=[])
    push.set_defaults(run=cmd_push)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except DockyardError as exc:
        print(f"dockyard: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
